"""IBM-like timing (``QRS_TIMING=ibm``, docs/timing.md) with the unmodified client over HTTP.

What qiskit-ibm-runtime's own integration tests need a real QPU's timing for: a job seen
``QUEUED`` and cancelled there (``test_cancel_job_queued``), retrieved while queued or running
(``test_retrieve_job_queued``, ``test_retrieve_job_running``, ``test_retrieve_pending_jobs``),
and ``result``/``wait_for_final_state`` with a short time-out raising ``RuntimeJobTimeoutError``
(``test_result_timeout``, ``test_wait_for_final_state_timeout``). Queue time fixed at 2 s, a
1 s overhead: a Bell job on fake_manila runs ~2 s of QPU time.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.conftest import Deployment, embedded_server
from tests.e2e.helpers import bell, wait_until

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")

QUEUE_SECONDS = 2.0
OVERHEAD = 1.0


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    env = {
        "QRS_TIMING": "ibm",
        "QRS_QUEUE_TIME": f"fixed:{QUEUE_SECONDS}",
        "QRS_QPU_OVERHEAD": str(OVERHEAD),
        "QRS_WORKERS": "1",
        "QRS_PRELOAD_BACKENDS": "fake_manila",
    }
    with embedded_server(tmp_path_factory.mktemp("timing"), **env) as deployment:
        yield deployment


@pytest.fixture
def service(timed: Deployment, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for key in ("QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL", "QISKIT_FUNCTIONS_EXPERIMENTAL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in timed.client_env().items():
        monkeypatch.setenv(key, value)
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService()


@pytest.fixture
def run(service):  # type: ignore[no-untyped-def]
    """Submit a Bell sampler job on fake_manila (the upstream tests' ``_run_program``)."""
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_manila")
    circuit = bell(backend)
    jobs = []

    def submit():  # type: ignore[no-untyped-def]
        job = SamplerV2(mode=backend).run([circuit])
        jobs.append(job)
        return job

    yield submit
    for job in jobs:  # leave the worker free for the next test
        if job.status() in ("QUEUED", "RUNNING"):
            job.cancel()


def _stamp(metrics: dict, name: str) -> datetime:  # type: ignore[type-arg]
    return datetime.fromisoformat(metrics["timestamps"][name])


def test_job_goes_queued_running_completed(service, run) -> None:  # type: ignore[no-untyped-def]
    job = run()
    assert job.status() == "QUEUED"
    assert service.backend("fake_manila").status().pending_jobs >= 1
    wait_until(lambda: job.status() == "RUNNING", 30, "the job running")
    # While it is held Running, the job's QPU time is its estimate. The client keeps the first
    # answer of ``usage_estimation`` (even ``None``) for good, so each poll asks a fresh job
    # object. (The first job on a backend also builds its noise model: up to tens of seconds on a
    # loaded machine, so the wait is generous; it ends as soon as the estimate is there.)
    wait_until(
        lambda: service.job(job.job_id()).usage_estimation.get("quantum_seconds") is not None,
        60,
        "the estimate",
    )
    job.result()
    assert job.status() == "DONE"
    metrics = job.metrics()
    timing = metrics["timing"]
    qpu = timing["qpu_seconds"]
    # 4096 shots x (250 µs + the Bell circuit's few µs) + the overhead.
    assert 4096 * 250e-6 + OVERHEAD < qpu < 4096 * 260e-6 + OVERHEAD
    assert metrics["usage"]["quantum_seconds"] == pytest.approx(qpu) == pytest.approx(job.usage())
    assert timing["queue_seconds"] == QUEUE_SECONDS and timing["simulation_seconds"] < qpu
    queued = (_stamp(metrics, "running") - _stamp(metrics, "created")).total_seconds()
    running = (_stamp(metrics, "finished") - _stamp(metrics, "running")).total_seconds()
    assert QUEUE_SECONDS - 0.05 <= queued < QUEUE_SECONDS + 3
    assert qpu - 0.05 <= running < qpu + 3
    assert service.job(job.job_id()).usage_estimation["quantum_seconds"] == pytest.approx(qpu)


def test_cancel_job_queued(service, run) -> None:  # type: ignore[no-untyped-def]
    run()
    job = run()
    assert job.status() == "QUEUED"
    job.cancel()
    assert job.status() == "CANCELLED"
    time.sleep(QUEUE_SECONDS + 0.5)  # past its queue time: the worker skips it
    rjob = service.job(job.job_id())
    assert rjob.status() == "CANCELLED"
    assert rjob.metrics()["timestamps"]["running"] is None  # it never ran


def test_retrieve_job_queued(service, run) -> None:  # type: ignore[no-untyped-def]
    run()
    job = run()
    assert job.status() == "QUEUED"
    rjob = service.job(job.job_id())
    assert rjob.job_id() == job.job_id() and rjob.primitive_id == "sampler"
    assert rjob.status() == "QUEUED"


def test_retrieve_job_running_and_pending(service, run) -> None:  # type: ignore[no-untyped-def]
    job = run()
    wait_until(lambda: job.status() == "RUNNING", 30, "the job running")
    rjob = service.job(job.job_id())
    assert rjob.job_id() == job.job_id() and rjob.primitive_id == "sampler"
    assert rjob.status() == "RUNNING"
    pending = [j.job_id() for j in service.jobs(pending=True)]
    assert job.job_id() in pending


def test_cancel_job_running(service, run) -> None:  # type: ignore[no-untyped-def]
    job = run()
    wait_until(lambda: job.status() == "RUNNING", 30, "the job running")
    job.cancel()
    assert job.status() == "CANCELLED"
    time.sleep(0.5)
    assert service.job(job.job_id()).status() == "CANCELLED"


def test_result_timeout(run) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime.exceptions import RuntimeJobTimeoutError

    job = run()
    with pytest.raises(RuntimeJobTimeoutError):
        job.result(0.1)


def test_wait_for_final_state_timeout(run) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime.exceptions import RuntimeJobTimeoutError

    job = run()
    with pytest.raises(RuntimeJobTimeoutError):
        job.wait_for_final_state(0.1)
