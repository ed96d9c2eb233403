"""The all-in-one server with QRS_WORKERS=2 and the unmodified client: a Batch's jobs run side by
side on two workers, a dedicated Session's jobs still one after the other (docs/workers.md)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.conftest import Deployment, embedded_server
from tests.e2e.helpers import LONG_SHOTS, bell, long_circuit, wait_until

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")

# The session's first job: the long circuit with a tenth of its shots, a few seconds of Aer
# time, so that a second worker, idle meanwhile, would have taken the next job had it been free to.
SESSION_SHOTS = LONG_SHOTS // 10


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with embedded_server(tmp_path_factory.mktemp("workers"), QRS_WORKERS="2") as deployment:
        yield deployment


@pytest.fixture
def service(two_workers: Deployment, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for key in ("QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL", "QISKIT_FUNCTIONS_EXPERIMENTAL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in two_workers.client_env().items():
        monkeypatch.setenv(key, value)
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService()


def interval(job) -> tuple[datetime, datetime]:  # type: ignore[no-untyped-def]
    """When the job ran, from its record (``job.metrics()``, as the client reads it)."""
    stamps = job.metrics()["timestamps"]
    return datetime.fromisoformat(stamps["running"]), datetime.fromisoformat(stamps["finished"])


def test_two_separate_workers_are_listed(two_workers: Deployment) -> None:
    def listed() -> list[dict[str, object]]:
        return list(httpx.get(f"{two_workers.base}/workers", timeout=5).json()["workers"])

    wait_until(lambda: len(listed()) == 2, 60, "two live workers")
    entries = listed()
    assert len({w["id"] for w in entries}) == 2  # one id each
    assert len({w["pid"] for w in entries}) == 1  # in the one server process
    assert httpx.get(f"{two_workers.base}/ready", timeout=5).json() == {"status": "ready", "workers": 2}


def test_batch_jobs_run_side_by_side(service) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import Batch, SamplerV2

    backend = service.backend("fake_sherbrooke")
    circuit = long_circuit(backend)
    with Batch(backend=backend) as batch:
        sampler = SamplerV2(mode=batch)
        jobs = [sampler.run([circuit], shots=LONG_SHOTS) for _ in range(2)]
        try:
            # Each is far longer than the test waits: both running at once is the overlap itself.
            wait_until(lambda: all(job.status() == "RUNNING" for job in jobs), 120, "both batch jobs running")
            workers = {job.metrics()["worker_id"] for job in jobs}
            assert len(workers) == 2  # on the two workers, each in its own simulation process
        finally:
            for job in jobs:
                job.cancel()
    assert [service.job(job.job_id()).status() for job in jobs] == ["CANCELLED", "CANCELLED"]
    (first_start, first_end), (second_start, second_end) = (interval(job) for job in jobs)
    # The records agree: each job started before the other ended.
    assert first_start < second_end and second_start < first_end


def test_session_jobs_still_run_one_at_a_time(service, two_workers: Deployment) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2, Session

    backend = service.backend("fake_sherbrooke")
    with Session(backend=backend) as session:
        sampler = SamplerV2(mode=session)
        first = sampler.run([long_circuit(backend)], shots=SESSION_SHOTS)
        second = sampler.run([bell(backend)], shots=100)
        assert sum(first.result()[0].data.meas.get_counts().values()) == SESSION_SHOTS
        assert sum(second.result()[0].data.meas.get_counts().values()) == 100
    _, first_end = interval(first)
    second_start, _ = interval(second)
    created = datetime.fromisoformat(second.metrics()["timestamps"]["created"])
    # The second job was queued while the first ran, with the other worker idle, and it still
    # started only once the first had finished.
    assert created < first_end
    assert second_start >= first_end
