"""Fault injection (docs/faults.md) driving the unmodified client's error and retry paths: rules
added through ``qiskit_runtime_server.testing.faults`` against the all-in-one server."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import pytest

from qiskit_runtime_server.testing.faults import add_fault, clear_faults, injected_fault, list_faults
from tests.conftest import Deployment, embedded_server
from tests.e2e.helpers import bell

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with embedded_server(tmp_path_factory.mktemp("faults"), QRS_ALLOW_FAULTS="true") as deployment:
        yield deployment


@pytest.fixture
def url(server: Deployment) -> Iterator[str]:
    clear_faults(server.base)
    yield server.base
    clear_faults(server.base)


@pytest.fixture
def service(server: Deployment, url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for key in ("QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL", "QISKIT_FUNCTIONS_EXPERIMENTAL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in server.client_env().items():
        monkeypatch.setenv(key, value)
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService()


def fired(url: str, fault_id: str) -> int:
    return int(next(f for f in list_faults(url) if f["id"] == fault_id)["fired"])


def test_job_failure_raises_the_injected_message(service, url: str) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

    backend = service.backend("fake_manila")
    message = "Qubit 3 readout calibration failed"
    rule = add_fault(url, effect="job_failure", backend="fake_manila", program="sampler", message=message, count=1)
    job = SamplerV2(mode=backend).run([bell(backend)], shots=10)
    with pytest.raises(RuntimeJobFailureError, match=message) as failure:
        job.result()
    assert "Error code 1517; Error in job execution: " + message in str(failure.value)
    assert job.status() == "ERROR"
    assert message in job.error_message()
    assert fired(url, rule["id"]) == 1
    # The count is spent: the next job runs.
    assert SamplerV2(mode=backend).run([bell(backend)], shots=10).result()[0].data.meas.num_shots == 10


def test_system_cancel_gives_cancelled(service, url: str) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import RuntimeInvalidStateError

    backend = service.backend("fake_manila")
    with injected_fault(
        url, effect="job_cancel", backend="fake_manila", message="Cancelled by the system: maintenance"
    ):
        job = SamplerV2(mode=backend).run([bell(backend)], shots=10)
        job.wait_for_final_state(timeout=60)
    assert job.status() == "CANCELLED"
    with pytest.raises(RuntimeInvalidStateError):
        job.result()
    assert list_faults(url) == []  # removed on leaving the block


def test_backend_offline_is_not_operational_and_least_busy_avoids_it(service, url: str) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import QiskitRuntimeService

    usual = service.least_busy(min_num_qubits=5)
    assert usual.status().operational is True
    with injected_fault(url, effect="backend_status", backend=usual.name, status="maintenance"):
        status = service.backend(usual.name).status()
        assert status.operational is False and status.status_msg == "maintenance"
        # A client started now lists the backend offline, so least_busy picks another one.
        other = QiskitRuntimeService().least_busy(min_num_qubits=5)
        assert other.name != usual.name and other.status().operational is True
    assert service.backend(usual.name).status().operational is True


def test_429_with_retry_after_is_retried_until_the_count_runs_out(service, url: str) -> None:  # type: ignore[no-untyped-def]
    backend = service.backend("fake_manila")
    rule = add_fault(
        url, effect="http_error", route="/backends/*/status", method="GET", status_code=429, retry_after=1, count=2
    )
    started = time.monotonic()
    assert backend.status().operational is True  # two 429s waited out, then the real answer
    assert time.monotonic() - started >= 2.0  # the client slept Retry-After each time
    assert fired(url, rule["id"]) == 2


def test_429_on_a_post_is_not_retried(service, url: str) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_manila")
    isa = bell(backend)
    add_fault(url, effect="http_error", route="/jobs", method="POST", status_code=429, retry_after=1, count=1)
    with pytest.raises(Exception, match="429") as refused:
        SamplerV2(mode=backend).run([isa], shots=10)
    assert "too_many_requests" in str(refused.value)


def test_503_on_submission_is_retried_and_the_job_runs(service, url: str) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_manila")
    isa = bell(backend)
    rule = add_fault(url, effect="http_error", route="/jobs", method="POST", status_code=503, count=2)
    sampler = SamplerV2(mode=backend)
    sampler.options.environment.job_tags = ["retried-503"]
    job = sampler.run([isa], shots=10)
    assert fired(url, rule["id"]) == 2  # two 503s, then the third POST queued the job
    assert job.result()[0].data.meas.num_shots == 10
    # The 503s were answered before the route: one job, not three.
    assert [j.job_id() for j in service.jobs(job_tags=["retried-503"])] == [job.job_id()]


def test_502_and_500_are_retried_too(service, url: str) -> None:  # type: ignore[no-untyped-def]
    backend = service.backend("fake_manila")
    first = add_fault(url, effect="http_error", route="/backends/fake_manila/status", status_code=502, count=1)
    second = add_fault(url, effect="http_error", route="/backends/fake_manila/status", status_code=500, count=1)
    assert backend.status().operational is True
    assert fired(url, first["id"]) == fired(url, second["id"]) == 1


def test_latency_is_added_to_the_route(service, url: str) -> None:  # type: ignore[no-untyped-def]
    backend = service.backend("fake_manila")
    backend.status()  # warm: token and connection
    with injected_fault(url, effect="latency", route="/backends/fake_manila/status", latency_ms=800):
        started = time.monotonic()
        backend.status()
        assert time.monotonic() - started >= 0.8


def test_session_expiry_refuses_the_next_job(service, url: str) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2, Session
    from qiskit_ibm_runtime.exceptions import IBMRuntimeError

    backend = service.backend("fake_manila")
    isa = bell(backend)
    with Session(backend=backend, max_time=600) as session:
        sampler = SamplerV2(mode=session)
        sampler.run([isa], shots=10).result()
        add_fault(url, effect="session_expiry", backend="fake_manila", count=1)
        with pytest.raises(IBMRuntimeError, match="409") as refused:
            sampler.run([isa], shots=10)
        assert f"Session {session.session_id} is closed." in str(refused.value)
        assert session.status() == "Closed"
        assert session.details()["state"] == "closed"
