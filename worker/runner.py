"""``ProgramRunner``: one long-lived child process that runs programs for the worker.

Why a child process: Aer holds a CPU (or GPU) until a simulation ends and cannot be
interrupted, so cancel and time-out kill the child instead; a crash in native code (or the OOM
killer) takes down only the child, and fails only the job it was running, with the signal named
(:class:`JobCrashed`): the child acknowledges each request before running it, so a death after
that is the job's doing, and one before it (a child that died idle) is replaced and not blamed.
The child is forked from a ``forkserver`` that has already imported qiskit and qiskit-aer, so a
replacement child is ready in milliseconds; caches (noise models, simulators) live in the child
and survive between jobs.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
import traceback
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from qiskit_runtime_server.worker.errors import ProgramError, plain_text

logger = logging.getLogger("qrs.worker")

_CHILD_MODULE = "qiskit_runtime_server.worker.simulation_process"
# Reasons for the signals a simulation process dies of; SIGKILL is the kernel's OOM killer
# unless the worker sent it (cancel, time-out), which is told apart by ``_stopping``.
_SIGNAL_CAUSES = {
    signal.SIGKILL: "most likely the kernel's out-of-memory killer: the job needed more memory than the "
    "machine or container has",
    signal.SIGSEGV: "a segmentation fault in native code",
    signal.SIGABRT: "native code aborted, often an allocation failing at the job's memory limit",
    signal.SIGBUS: "a bus error in native code",
    signal.SIGILL: "an illegal instruction in native code",
    signal.SIGFPE: "an arithmetic fault in native code",
}


class RunnerCrashed(Exception):
    """The child process died or could not start before it took the job: an infrastructure fault."""


class JobCrashed(ProgramError):
    """The child process died while it ran this job's input (out of memory, a segfault...).

    A :class:`~worker.errors.ProgramError`: the same input kills the process the same way, so
    the job fails at once instead of being retried. The message names the signal or exit status.
    """


class RunnerStopped(Exception):
    """The run was stopped on purpose by :meth:`ProgramRunner.stop` (cancel or time-out)."""


def describe_exit(exitcode: int | None, memory_limit_mb: int | None = None) -> str:
    """Plain-text cause of a child's death from its ``exitcode`` (``-N``: killed by signal N)."""
    if exitcode is None:
        return "the simulation process stopped answering"
    if exitcode >= 0:
        return f"the simulation process exited with status {exitcode}"
    try:
        sig = signal.Signals(-exitcode)
    except ValueError:
        return f"the simulation process was killed by signal {-exitcode}"
    cause = _SIGNAL_CAUSES.get(sig)
    text = f"the simulation process was killed by {sig.name}" + (f" ({cause})" if cause else "")
    if sig in (signal.SIGKILL, signal.SIGABRT):
        limit = f"{memory_limit_mb} MiB" if memory_limit_mb else "half of the machine's memory"
        text += f"; the job memory limit is {limit} (QRS_JOB_MEMORY_LIMIT)"
    return text


def _serve(conn: Connection) -> None:
    """Child main loop: receive a request, acknowledge it with ``("taken",)``, then answer
    ``("ok", Outcome)``, ``("error", message)`` or ``("crash", summary, traceback)``."""
    from qiskit_runtime_server.worker import simulation_process as child

    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        reply: tuple[Any, ...]
        try:
            # From here on a death of this process is the job's doing (see ProgramRunner.run).
            conn.send(("taken",))
            reply = ("ok", child.execute(request))
        except ProgramError as exc:
            reply = ("error", str(exc))
        except MemoryError:
            reply = ("error", "The job ran out of memory: it needs more than one job may use (QRS_JOB_MEMORY_LIMIT).")
        except Exception as exc:  # a program bug must fail the job, not kill the child
            reply = ("crash", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        try:
            conn.send(reply)
        except OSError:  # the worker died (kill -9) while we ran; its job runs elsewhere
            return


def _warm(conn: Connection, device: str, preload: tuple[str, ...], memory_limit_mb: int) -> None:
    from qiskit_runtime_server.worker import simulation_process as child

    child.limit_memory(memory_limit_mb)
    child.warm_up(device, preload)
    _serve(conn)


# Several runners (the all-in-one server's workers) may start the forkserver at once, each from
# its own thread: the environment is changed for the start only, one runner at a time.
_forkserver_start = threading.Lock()


def _start_forkserver(threads: int = 0) -> None:
    """Start multiprocessing's forkserver with ``PYTHONSAFEPATH=1`` (and ``OMP_NUM_THREADS``).

    The forkserver runs ``python -c ...``, which puts the current directory first on
    ``sys.path``: a user's own ``qiskit_runtime_server/`` (or any package qiskit needs) in the
    directory the server was started from would be imported by the preload and then inherited
    by every simulation process. Safe-path mode keeps the current directory off ``sys.path``.

    ``threads`` > 0 starts it with ``OMP_NUM_THREADS=threads`` unless the user set that
    variable: the preload loads Aer's OpenMP runtime, which reads the variable once, and Aer's
    ``max_parallel_threads=0`` ("all cores", worker/engines/aer.py) then means that many
    threads in every simulation process forked from it. The forkserver is one per process and
    outlives the runner, so the first start decides for all runners of this process.
    """
    extra = {"PYTHONSAFEPATH": "1"}
    if threads > 0 and "OMP_NUM_THREADS" not in os.environ:
        extra["OMP_NUM_THREADS"] = str(threads)
    with _forkserver_start:
        previous = {name: os.environ.get(name) for name in extra}
        os.environ.update(extra)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            for name, value in previous.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value


class ProgramRunner:
    """Runs :class:`worker.simulation_process.ExecutionRequest` s one at a time in a child process.

    Every blocking step (starting the child, which waits for the forkserver to import qiskit,
    about 2.6 s the first time; joining a dead child) runs in a thread, so the event loop (in the
    embedded server also the API's) never stalls on it.

    ``threads``: OpenMP threads per simulation (0: Aer's default, every core); see
    :func:`_start_forkserver` for how it is applied and why the first runner of a process
    decides. The all-in-one server gives all its workers' runners the same value.
    """

    def __init__(
        self, device: str = "CPU", preload: tuple[str, ...] = (), memory_limit_mb: int = 0, threads: int = 0
    ) -> None:
        self._device = device
        self._preload = preload
        self._memory_limit_mb = memory_limit_mb
        self._threads = threads
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload([_CHILD_MODULE])
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._stopping = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the child now (imports qiskit) rather than on the first job."""
        if self._process is not None and self._process.is_alive():
            return
        await self._reap()
        self._process, self._conn = await asyncio.to_thread(self._spawn)

    def _spawn(self) -> tuple[BaseProcess, Connection]:
        _start_forkserver(self._threads)
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_warm,
            args=(child, self._device, self._preload, self._memory_limit_mb),
            daemon=True,
            name="qrs-runner",
        )
        process.start()
        child.close()
        return process, parent

    async def run(self, request: Any) -> Any:
        """Run ``request`` in the child and return its ``Outcome``.

        A child found dead before it took the job (it died idle) is replaced once.

        Raises:
            ProgramError: the program rejected its input, or raised an unexpected exception (its
                traceback is logged here, the summary is the message).
            JobCrashed: the child died while running this job (signal or memory limit named).
            RunnerStopped: :meth:`stop` was called during the run.
            RunnerCrashed: the child could not take the job (it died before, twice).
        """
        async with self._lock:
            self._stopping = False
            for attempt in (1, 2):
                await self.start()
                if self._stopping:  # cancelled while the child was starting (in a thread)
                    raise RunnerStopped()
                taken, reply = await self._exchange(request)
                if reply is not None:
                    break
                process = self._process
                await self._reap()
                if self._stopping:
                    raise RunnerStopped()
                cause = describe_exit(process.exitcode if process else None, self._memory_limit_mb)
                if taken:
                    raise JobCrashed(f"The job's simulation crashed: {cause}.")
                logger.warning("%s before taking job %s; starting a new one", cause, getattr(request, "job_id", "?"))
                if attempt == 2:
                    raise RunnerCrashed(cause)
        assert reply is not None
        status = reply[0]
        if status == "crash":
            summary, details = plain_text(reply[1]), reply[2]
            logger.error("unexpected error in job %s: %s\n%s", getattr(request, "job_id", "?"), summary, details)
            raise ProgramError(f"{summary} (an unexpected error; the worker log has its traceback)")
        if status == "error":
            raise ProgramError(plain_text(reply[1]))
        return reply[1]

    async def _exchange(self, request: Any) -> tuple[bool, tuple[Any, ...] | None]:
        """Send ``request``; (whether the child took it, its reply or ``None`` if it died)."""
        conn = self._conn
        assert conn is not None
        taken = False
        try:
            await asyncio.to_thread(conn.send, request)
            ack = await asyncio.to_thread(conn.recv)
            taken = ack == ("taken",)
            return taken, await asyncio.to_thread(conn.recv)
        except (EOFError, OSError):
            return taken, None

    async def stop(self) -> None:
        """Kill the child (a running simulation stops at once); the next run starts a new one."""
        self._stopping = True
        process = self._process
        if process is not None and process.is_alive():
            process.kill()
            # Wait for the kill to land, so that a run right after this one never finds the
            # dying child still "alive" and writes to its broken pipe.
            await asyncio.to_thread(process.join, 5)

    async def _reap(self) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if process is not None:
            await asyncio.to_thread(process.join, 5)
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        """Stop the child and release its pipe."""
        await self.stop()
        await self._reap()
