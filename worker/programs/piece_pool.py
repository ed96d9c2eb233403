"""Run an estimator job's light-cone pieces side by side, in helpers forked from the simulation process.

A 100-node QAOA evaluation at resilience 1 is about 90 pieces (``estimator_cones.py``). Each
piece is boxed, built into a samplex (samplomatic: pure Python) and sampled, so a job keeps one
core busy while the machine's others wait. With ``QRS_PIECE_PROCESSES`` above 1 the simulation
process forks that many helpers the first time a job has pieces, and keeps them: each job's
pieces are dealt out (largest first, to the least loaded helper by instruction count), each
helper runs its share with the engine it inherited, and sends back the results and its part of
the job's :class:`~worker.engines.report.SimulationReport`.

The helpers are kept, not forked per job, because what makes a loop's later jobs fast lives in
the process that ran a piece: the samplex builds and boxed circuits (``build_cache.py``), the
reused-wire schedules and Kraus forms (``engines/reused_wires.py``). Sending those back would
cost more than the work (a QAOA layer's builds pickle to about 60 MB, 20 s there and back).
The deal depends only on the pieces, so a loop's jobs give each helper the same pieces again
and it finds its own cache entries.

A helper dies with its parent (``PR_SET_PDEATHSIG``), so a job cancelled by killing the
simulation process stops its helpers too. A helper that dies (out of memory) fails the job
with the reason, and the next job forks new helpers. Each helper's data segment is limited to
its share of the job's memory cap, and Aer in a helper uses its share of the cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from threadpoolctl import threadpool_limits

from qiskit_runtime_server.worker.embedded import usable_cores
from qiskit_runtime_server.worker.engines.report import SimulationReport
from qiskit_runtime_server.worker.errors import ProgramError

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


# Memory a helper may come to hold (MiB): the pages it writes of what it inherited, and its own
# caches; about 700 MiB after a 100-node QAOA layer's ~45 pieces on fake_sherbrooke.
HELPER_MEMORY_MB = 1024


def default_processes(memory_limit_mb: int) -> int:
    """Helpers for ``QRS_PIECE_PROCESSES=0``: one per core this process may use, at most one per
    ``HELPER_MEMORY_MB`` of the job's memory cap (``memory_limit_mb`` MiB), so that a container
    sized for one job (docker-compose.yml: the cap plus 1 GiB) holds them."""
    return max(1, min(usable_cores(), memory_limit_mb // HELPER_MEMORY_MB))


def deal(costs: Sequence[float], helpers: int) -> list[list[int]]:
    """Indices of ``costs`` per helper: largest first, each to the helper with the least so far
    (ties to the lower helper), each share in index order. Deterministic in ``costs``."""
    shares: list[list[int]] = [[] for _ in range(helpers)]
    loads = [0.0] * helpers
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        target = min(range(helpers), key=lambda h: (loads[h], h))
        shares[target].append(index)
        loads[target] += costs[index]
    return [sorted(share) for share in shares]


def _die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent exits (Linux), and exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the helper ends when its pipe closes
        pass


def _serve(conn: Connection, engine: Any, parent: int, threads: int, memory_limit_mb: int | None) -> None:
    """A helper's loop: ``(work, items, max_seconds)`` in, ``("ok", results, report)`` or
    ``("error", exception)`` out, until the pipe closes."""
    _die_with_parent()
    if os.getppid() != parent:
        os._exit(0)
    # numpy's BLAS (the small-group density matrices) and Aer would each start a thread per
    # core in every helper: N helpers on N cores ran 1.6x slower than with one thread each.
    threadpool_limits(threads)
    engine.threads = threads
    if memory_limit_mb:
        from qiskit_runtime_server.worker.simulation_process import limit_memory

        limit_memory(memory_limit_mb)
        engine.memory_limit_mb = memory_limit_mb
    while True:
        try:
            work, items, max_seconds = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        try:
            engine.begin_job(max_seconds)
            results = [(index, work(engine, item)) for index, item in items]
            conn.send(("ok", results, engine.report))
        except BaseException as exc:  # handed to the parent, which raises it for the job
            try:
                conn.send(("error", exc))
            except Exception:  # the exception itself does not pickle
                conn.send(("error", ProgramError(f"{type(exc).__name__}: {exc}")))


class _Helper:
    """One forked helper: its pid and our end of its pipe.

    Forked with ``os.fork``, not ``multiprocessing.Process``: the simulation process is itself
    a daemonic ``multiprocessing`` child, and those may not start ``Process`` children.
    """

    def __init__(self, engine: Any, threads: int, memory_limit_mb: int | None) -> None:
        ours, theirs = multiprocessing.Pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the helper
            code = 0
            try:
                ours.close()
                _serve(theirs, engine, parent, threads, memory_limit_mb)
            except BaseException:  # nothing may unwind into the parent's code from here
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self.conn = ours
        self.exitcode: int | None = None

    def poll(self) -> int | None:
        """The helper's exit code (``-N``: killed by signal N), or ``None`` while it runs."""
        if self.exitcode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.exitcode = -1
                return self.exitcode
            if pid:
                self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode

    def wait(self, timeout: float) -> int | None:
        """:meth:`poll` until the helper has exited or ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.exitcode

    def stop(self) -> None:
        self.conn.close()
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait(5)


class PiecePool:
    """``processes`` helpers forked from this process, each holding ``engine``'s state as it
    was at the fork and growing its own caches.

    Raises (from :meth:`map`): whatever a piece raised (``ProgramError`` for bad input), or
    ``ProgramError`` naming the exit when a helper died.
    """

    def __init__(self, engine: Any, processes: int) -> None:
        self.engine = engine
        self.processes = processes
        share = engine.memory_limit_mb // processes if getattr(engine, "memory_limit_mb", 0) else None
        threads = max(1, usable_cores() // processes)
        self._helpers = [_Helper(engine, threads, share) for _ in range(processes)]

    @property
    def pids(self) -> list[int]:
        return [helper.pid for helper in self._helpers]

    @property
    def alive(self) -> bool:
        return all(helper.poll() is None for helper in self._helpers)

    def map(
        self,
        work: Callable[[Any, Any], Any],
        items: Sequence[Any],
        costs: Sequence[float],
        max_seconds: float | None,
    ) -> tuple[list[Any], list[SimulationReport]]:
        """``[work(engine, item) for item in items]`` across the helpers, and each helper's report.

        ``work`` and the items must pickle (a module-level function, or a ``partial`` of one).
        """
        shares = deal(costs, self.processes)
        busy = []
        for helper, share in zip(self._helpers, shares, strict=True):
            if share:
                helper.conn.send((work, [(i, items[i]) for i in share], max_seconds))
                busy.append(helper)
        results: list[Any] = [None] * len(items)
        reports: list[SimulationReport] = []
        failure: BaseException | None = None
        for helper in busy:
            try:
                reply = helper.conn.recv()
            except (EOFError, OSError):
                exitcode = helper.wait(5)
                self.close()
                from qiskit_runtime_server.worker.runner import describe_exit

                raise ProgramError(
                    f"A process running the job's light-cone pieces stopped: "
                    f"{describe_exit(exitcode, getattr(self.engine, 'memory_limit_mb', None))}"
                ) from None
            if reply[0] == "ok":
                for index, result in reply[1]:
                    results[index] = result
                reports.append(reply[2])
            elif failure is None:
                failure = reply[1]
        if failure is not None:
            raise failure
        return results, reports

    def close(self) -> None:
        for helper in self._helpers:
            helper.stop()
        self._helpers = []


_pool: PiecePool | None = None


def pool_for(engine: Any, processes: int) -> PiecePool:
    """This process's pool of ``processes`` helpers for ``engine``, forked now if there is none
    for them (or one of its helpers has died)."""
    global _pool
    if _pool is not None and (_pool.engine is not engine or _pool.processes != processes or not _pool.alive):
        _pool.close()
        _pool = None
    if _pool is None:
        _pool = PiecePool(engine, processes)
    return _pool


def shutdown() -> None:
    """Stop this process's helpers, if any (tests; the helpers also end with the process)."""
    global _pool
    if _pool is not None:
        _pool.close()
        _pool = None
