"""The all-in-one server's workers (worker/embedded.py): how many, each job's memory and threads,
and several workers running in one event loop with their own ids and simulation processes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import subprocess
import sys

import msgspec
import pytest

from qiskit_runtime_server.shared import workers as registry
from qiskit_runtime_server.shared.logs import ContextFilter
from qiskit_runtime_server.shared.queue import connect
from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.worker.embedded import (
    MIN_JOB_MEMORY_MB,
    SIMULATION_PROCESS_MB,
    WorkerPlan,
    embedded_workers,
    plan_workers,
    worker_ids,
)

GIB = 1024
CORES = (1, 2, 4, 16, 64)
MEMORY = (1 * GIB, 4 * GIB, 8 * GIB, 32 * GIB, 512 * GIB)
REQUESTED = (0, 1, 3, 32)


def together(plan: WorkerPlan) -> int:
    """MiB all the plan's jobs may hold at once, with the simulation processes beyond the first."""
    return plan.workers * plan.job_memory_limit + (plan.workers - 1) * SIMULATION_PROCESS_MB


def test_one_worker_per_core_by_default_dividing_half_the_memory() -> None:
    plan = plan_workers(0, 0, cores=8, memory_mb=32 * GIB)
    assert plan.workers == 8 and plan.threads == 1 and plan.notes == ()
    assert plan.job_memory_limit == (16 * GIB - 7 * SIMULATION_PROCESS_MB) // 8
    assert together(plan) <= 16 * GIB  # what one job could use alone: half the machine


@pytest.mark.parametrize(("cores", "memory_mb", "requested"), list(itertools.product(CORES, MEMORY, REQUESTED)))
def test_default_limit_jobs_together_fit_what_one_job_had(cores: int, memory_mb: int, requested: int) -> None:
    plan = plan_workers(requested, 0, cores=cores, memory_mb=memory_mb)
    wanted = requested or cores
    budget = max(256, memory_mb // 2)  # one job's default limit (worker/engines/aer.py)
    assert 1 <= plan.workers <= wanted
    if plan.workers == 1:
        # Unchanged from a single worker: the child's own default, Aer's thread default.
        assert plan.job_memory_limit == 0 and plan.threads == 0
    else:
        assert together(plan) <= budget and plan.job_memory_limit >= MIN_JOB_MEMORY_MB
        assert plan.threads == max(1, cores // plan.workers)
    if plan.workers < wanted:  # as many as fit: one more would leave a job under the minimum
        more = plan.workers + 1
        assert (budget - plan.workers * SIMULATION_PROCESS_MB) // more < MIN_JOB_MEMORY_MB
        assert plan.notes and str(wanted) in plan.notes[0] and str(plan.workers) in plan.notes[0]
    else:
        assert plan.notes == ()


@pytest.mark.parametrize(("cores", "memory_mb", "requested"), list(itertools.product(CORES, MEMORY, REQUESTED)))
def test_explicit_limit_is_per_job_and_caps_the_workers(cores: int, memory_mb: int, requested: int) -> None:
    limit = 3 * GIB
    plan = plan_workers(requested, limit, cores=cores, memory_mb=memory_mb)
    wanted = requested or cores
    assert plan.job_memory_limit == limit  # never divided: the user chose one job's memory
    assert 1 <= plan.workers <= wanted
    if plan.workers > 1:
        assert together(plan) <= memory_mb
    if plan.workers < wanted:
        more = plan.workers + 1
        assert more * limit + plan.workers * SIMULATION_PROCESS_MB > memory_mb
        assert "QRS_JOB_MEMORY_LIMIT=3072" in plan.notes[0]
    else:
        assert plan.notes == ()


def test_small_machine_runs_fewer_workers_and_says_why() -> None:
    plan = plan_workers(4, 0, cores=4, memory_mb=4 * GIB)
    assert plan.workers == 1 and plan.job_memory_limit == 0
    assert "QRS_WORKERS=4 would run 4 workers" in plan.notes[0] and "running 1 worker" in plan.notes[0]


def test_more_workers_than_cores_get_one_thread_each() -> None:
    plan = plan_workers(6, 0, cores=2, memory_mb=64 * GIB)
    assert plan.workers == 6 and plan.threads == 1


def test_describe_names_workers_memory_and_threads() -> None:
    assert WorkerPlan(1, 0, 0).describe() == "1 worker; each job may use half of the machine's memory and every core"
    assert WorkerPlan(3, 2048, 2).describe() == "3 workers; each job may use 2048 MiB and 2 OpenMP thread(s)"


def test_worker_ids_are_unique_and_a_single_worker_keeps_its_id() -> None:
    assert worker_ids("lab", 1) == ["lab"]
    assert worker_ids("lab", 3) == ["lab-1", "lab-2", "lab-3"]


def test_workers_setting() -> None:
    assert load_settings({}).workers == 0
    assert load_settings({"QRS_WORKERS": "3"}).workers == 3
    with pytest.raises(msgspec.ValidationError, match="QRS_WORKERS"):
        load_settings({"QRS_WORKERS": "-1"})


def test_simulation_processes_get_the_thread_count_unless_the_user_set_one() -> None:
    """The forkserver (one per process) is started in a fresh interpreter for each case."""
    code = """
import asyncio, os, sys
from qiskit_runtime_server.worker.runner import ProgramRunner

async def main():
    runners = [ProgramRunner(threads=int(sys.argv[1])) for _ in range(2)]
    await asyncio.gather(*(r.start() for r in runners))  # two at once, as the workers start
    for r in runners:
        with open(f"/proc/{r._process.pid}/environ", "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\\0") if b"=" in e)
        print(env.get(b"OMP_NUM_THREADS", b"-").decode(), env.get(b"PYTHONSAFEPATH", b"-").decode())
        await r.close()
    print(os.environ.get("OMP_NUM_THREADS", "-"), os.environ.get("PYTHONSAFEPATH", "-"))

asyncio.run(main())
"""

    def run(threads: int, **env: str) -> list[str]:
        base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTHONSAFEPATH")}
        done = subprocess.run(
            [sys.executable, "-c", code, str(threads)],
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.split("\n")[:3]

    # Both children have the count; the server's own environment is left as it was.
    assert run(2) == ["2 1", "2 1", "- -"]
    assert run(0) == ["- 1", "- 1", "- -"]  # 0: Aer's default
    assert run(2, OMP_NUM_THREADS="3") == ["3 1", "3 1", "3 -"]  # the user's value wins


async def test_workers_run_side_by_side_with_their_own_ids_and_processes() -> None:
    pool = await connect(None)
    settings = load_settings({"QRS_WORKER_ID": "lab", "QRS_JOB_LEASE": "3"})
    plan = WorkerPlan(workers=2, job_memory_limit=2048, threads=1)
    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign]
    handler.addFilter(ContextFilter("process-wide"))
    logger = logging.getLogger("qrs.worker")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)

    def ready_lines() -> dict[str, object]:
        found = [r for r in lines if r.getMessage().endswith("queue qrs:queue)")]
        return {r.getMessage().split()[1]: getattr(r, "worker_id", None) for r in found}

    try:
        async with embedded_workers(settings, pool, plan) as running:
            assert list(running) == ["lab-1", "lab-2"]
            for _ in range(1200):  # a hang guard: the first start imports qiskit in the forkserver
                if len(ready_lines()) == 2:
                    break
                await asyncio.sleep(0.05)
            assert {w.id for w in await registry.live_workers(pool)} == {"lab-1", "lab-2"}
            assert ready_lines() == {"lab-1": "lab-1", "lab-2": "lab-2"}  # each line names its own worker
            # Each has its own simulation process, capped at the plan's memory.
            runners = [worker.ctx["runner"] for worker in running.values()]
            pids = {runner._process.pid for runner in runners if runner._process and runner._process.is_alive()}
            assert len(pids) == 2
            assert {runner._memory_limit_mb for runner in runners} == {2048}
        # All stopped: out of the registry at once (not after a lease), their processes gone.
        assert await registry.live_workers(pool) == []
        assert all(runner._process is None for runner in runners)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
