"""``ProgramRunner``: one long-lived child process that runs programs for the worker.

Why a child process: Aer holds a CPU (or GPU) until a simulation ends and cannot be
interrupted, so cancel and time-out kill the child instead; a crash in native code (or the OOM
killer) takes down only the child. The child is forked from a ``forkserver`` that has already
imported qiskit and qiskit-aer, so a replacement child is ready in milliseconds; caches (noise
models, simulators) live in the child and survive between jobs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from worker.errors import ProgramError

_CHILD_MODULE = "worker.execute"


class RunnerCrashed(Exception):
    """The child process died mid-run (killed, segfault, OOM): an infrastructure fault."""


class RunnerStopped(Exception):
    """The run was stopped on purpose by :meth:`ProgramRunner.stop` (cancel or time-out)."""


def _serve(conn: Connection) -> None:
    """Child main loop: receive a request, answer ``("ok", Outcome)`` or ``("error", message)``."""
    from worker import execute as child

    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("ok", child.execute(request))
        except ProgramError as exc:
            reply = ("error", str(exc))
        except MemoryError:
            reply = ("error", "The job ran out of memory: it needs more than one job may use (QRS_JOB_MEMORY_LIMIT).")
        except Exception as exc:  # a program bug must fail the job, not kill the child
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:  # the worker died (kill -9) while we ran; its job runs elsewhere
            return


def _warm(conn: Connection, device: str, preload: tuple[str, ...], memory_limit_mb: int) -> None:
    from worker import execute as child

    child.limit_memory(memory_limit_mb)
    child.warm_up(device, preload)
    _serve(conn)


class ProgramRunner:
    """Runs :class:`worker.execute.ExecutionRequest` s one at a time in a child process."""

    def __init__(self, device: str = "CPU", preload: tuple[str, ...] = (), memory_limit_mb: int = 0) -> None:
        self._device = device
        self._preload = preload
        self._memory_limit_mb = memory_limit_mb
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload([_CHILD_MODULE])
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._stopping = False
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Start the child now (imports qiskit) rather than on the first job."""
        if self._process is not None and self._process.is_alive():
            return
        self._reap()
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_warm,
            args=(child, self._device, self._preload, self._memory_limit_mb),
            daemon=True,
            name="qrs-runner",
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent

    async def run(self, request: Any) -> Any:
        """Run ``request`` in the child and return its ``Outcome``.

        Raises:
            ProgramError: the program rejected its input.
            RunnerStopped: :meth:`stop` was called during the run.
            RunnerCrashed: the child died for another reason.
        """
        async with self._lock:
            self.start()
            conn = self._conn
            assert conn is not None
            self._stopping = False
            try:
                await asyncio.to_thread(conn.send, request)
                status, payload = await asyncio.to_thread(conn.recv)
            except (EOFError, OSError, BrokenPipeError):
                self._reap()
                if self._stopping:
                    raise RunnerStopped() from None
                raise RunnerCrashed("the simulation process died") from None
        if status == "error":
            raise ProgramError(payload)
        return payload

    def stop(self) -> None:
        """Kill the child (a running simulation stops at once); the next run starts a new one."""
        self._stopping = True
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            # Wait for the kill to land, so that a run right after this one never finds the
            # dying child still "alive" and writes to its broken pipe.
            self._process.join(timeout=5)

    def _reap(self) -> None:
        if self._process is not None:
            self._process.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None

    def close(self) -> None:
        """Stop the child and release its pipe."""
        self.stop()
        self._reap()
