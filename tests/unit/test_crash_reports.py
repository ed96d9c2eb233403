"""Honest failures: a simulation process that dies running a job fails that job at once, naming the
signal; one that died before taking it is replaced; unexpected exceptions are logged with their
traceback and summarised in plain text."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import fakeredis
import pytest

from qiskit_runtime_server.shared.models import REASON_EXECUTION_ERROR, JobRecord, JobStatus
from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.worker.errors import ProgramError, plain_text
from qiskit_runtime_server.worker.runner import JobCrashed, ProgramRunner
from qiskit_runtime_server.worker.tasks import WorkerContext, run_job
from tests.unit.test_memory_limit import sampler_request

LONG_SHOTS = 10_000_000  # several seconds of sampling; killed long before it needs much memory


@pytest.fixture
async def runner() -> ProgramRunner:  # type: ignore[misc]
    runner = ProgramRunner(memory_limit_mb=2048)
    await runner.run(sampler_request("warm", 10))
    yield runner
    await runner.close()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _kill_child_soon(runner: ProgramRunner, sig: int) -> None:
    """Send ``sig`` to the child once it has spent 0.2 s of CPU on the job (it is simulating)."""
    process = runner._process
    assert process is not None and process.pid is not None
    idle = _cpu_seconds(process.pid)
    deadline = time.monotonic() + 30
    while _cpu_seconds(process.pid) - idle < 0.2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    os.kill(process.pid, sig)


@pytest.mark.parametrize(("sig", "cause"), [(signal.SIGKILL, "out-of-memory killer"), (signal.SIGSEGV, "segmentation")])
async def test_a_child_killed_while_running_the_job_fails_it_naming_the_signal(
    runner: ProgramRunner, sig: int, cause: str
) -> None:
    killer = asyncio.create_task(_kill_child_soon(runner, sig))
    with pytest.raises(JobCrashed, match=signal.Signals(sig).name) as info:
        await runner.run(sampler_request("doomed", LONG_SHOTS))
    await killer
    assert cause in str(info.value)
    assert (await runner.run(sampler_request("next", 10))).num_pubs == 1


async def test_a_child_that_died_idle_is_replaced_without_failing_the_next_job(runner: ProgramRunner) -> None:
    process = runner._process
    assert process is not None and process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    await asyncio.to_thread(process.join, 5)
    assert (await runner.run(sampler_request("after", 10))).num_pubs == 1


async def test_an_unexpected_exception_is_logged_with_its_traceback(
    runner: ProgramRunner, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    request = sampler_request("bug", 10)
    params = json.loads(request.params)
    params["pubs"][0][1] = {"not": "an array"}  # np.asarray(dict, dtype=float): TypeError in the program
    bad = type(request)(**{**request.__dict__, "params": json.dumps(params).encode()})
    with caplog.at_level(logging.ERROR, logger="qrs.worker"), pytest.raises(ProgramError, match="TypeError") as info:
        await runner.run(bad)
    assert "Traceback (most recent call last)" in caplog.text and "bug" in caplog.text
    assert "Traceback" not in str(info.value) and "worker log" in str(info.value)


def test_failure_reasons_are_plain_text() -> None:
    raw = (
        "\x1b[31mPanicException\x1b[0m: index out of bounds\n"
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
        "stack backtrace:\n   0: rust_begin_unwind\n   1: core::panicking::panic_fmt\n"
    )
    assert plain_text(raw) == "PanicException: index out of bounds"
    assert len(plain_text("x" * 10_000)) == 2000


async def test_run_job_fails_a_job_that_kills_its_simulation_process_without_retrying(runner: ProgramRunner) -> None:
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store = JobStore(redis)
    request = sampler_request("jcrash", LONG_SHOTS)
    record = JobRecord(id="jcrash", program_id="sampler", backend="fake_manila", instance="crn:x", created=time.time())
    await store.create(record, request.params)
    settings = load_settings({}, max_shots=10**7)
    ctx: WorkerContext = {"store": store, "runner": runner, "settings": settings, "worker_id": "w1"}
    killer = asyncio.create_task(_kill_child_soon(runner, signal.SIGKILL))
    assert await run_job(ctx, "jcrash") == JobStatus.FAILED.value
    await killer
    final = await store.get("jcrash")
    assert final is not None and final.status == JobStatus.FAILED
    assert final.reason_code == REASON_EXECUTION_ERROR
    assert final.reason is not None and "SIGKILL" in final.reason and "QRS_JOB_MEMORY_LIMIT" in final.reason
