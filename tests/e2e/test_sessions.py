"""Session and Batch with the unmodified client: state machine, ordering, close, cancel, from_id."""

from __future__ import annotations

import json
import warnings

import httpx
import pytest

from tests.e2e.helpers import LONG_SHOTS, bell, long_circuit, wait_until

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")


def raw_submit(deployment, session_id: str, backend: str = "fake_manila") -> httpx.Response:  # type: ignore[no-untyped-def]
    token = httpx.post(f"{deployment.base}/identity/token", data={"apikey": "test-api-key"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}", "Content-Type": "application/json"}
    body = {"program_id": "sampler", "backend": backend, "session_id": session_id, "params": {"pubs": [["circuit"]]}}
    return httpx.post(f"{deployment.base}/api/v1/jobs", content=json.dumps(body), headers=headers)


def test_session_lifecycle(deployment, service) -> None:
    from qiskit_ibm_runtime import SamplerV2, Session

    backend = service.backend("fake_manila")
    isa = bell(backend)
    with Session(backend=backend, max_time=600) as session:
        assert session.details()["state"] == "open"
        assert session.status() == "Pending"
        sampler = SamplerV2(mode=session)
        first = sampler.run([isa], shots=20)
        second = sampler.run([isa], shots=20)
        assert first.session_id == second.session_id == session.session_id
        first.result(), second.result()
        details = session.details()
        assert details["mode"] == "dedicated" and details["backend_name"] == "fake_manila"
        assert details["max_time"] == 600 and details["interactive_timeout"] == 60
        assert details["state"] == "active" and details["accepting_jobs"] is True  # interactive window
        assert session.status() == "In progress, accepting new jobs"
        assert details["activated_at"] and details["last_job_completed"]
        assert session.usage() >= 0
        # One at a time, in submission order.
        assert second.metrics()["timestamps"]["running"] >= first.metrics()["timestamps"]["finished"]
        listed = [j.job_id() for j in service.jobs(session_id=session.session_id)]
        assert listed == [second.job_id(), first.job_id()]
        again = Session.from_id(session.session_id, service)
        assert again.session_id == session.session_id
    # Leaving the block sends accepting_jobs=false; with no job left the session is closed.
    details = session.details()
    assert details["state"] == "closed" and details["accepting_jobs"] is False and details["closed_at"]
    assert session.status() == "Closed"
    refused = raw_submit(deployment, session.session_id)
    assert refused.status_code == 409 and refused.json()["errors"][0]["code"] == "conflict"


def test_session_cancel_cancels_queued_jobs(service) -> None:
    from qiskit_ibm_runtime import SamplerV2, Session

    big = service.backend("fake_sherbrooke")
    session = Session(backend=big)
    sampler = SamplerV2(mode=session)
    running = sampler.run([long_circuit(big)], shots=LONG_SHOTS)
    queued = sampler.run([bell(big)], shots=10)
    wait_until(lambda: running.status() == "RUNNING", what="the first session job to start")
    session.cancel()
    assert service.job(queued.job_id()).status() == "CANCELLED"
    assert session.details()["state"] == "closed"
    running.cancel()  # running jobs are left to finish by a session cancel; stop it ourselves
    assert service.job(running.job_id()).status() == "CANCELLED"


def test_batch_and_from_id(service) -> None:
    from qiskit_ibm_runtime import Batch, SamplerV2, Session
    from qiskit_ibm_runtime.exceptions import IBMInputValueError

    backend = service.backend("fake_manila")
    with Batch(backend=backend) as batch:
        jobs = [SamplerV2(mode=batch).run([bell(backend)], shots=10) for _ in range(2)]
        for job in jobs:
            assert job.result()[0].data.meas.num_shots == 10
        details = batch.details()
        assert details["mode"] == "batch" and details["state"] == "inactive"
        assert Batch.from_id(batch.session_id, service).session_id == batch.session_id
        with pytest.raises(IBMInputValueError):
            Session.from_id(batch.session_id, service)
    assert batch.details()["state"] == "closed"


def test_session_errors(deployment, service) -> None:
    from qiskit_ibm_runtime import Session
    from qiskit_ibm_runtime.exceptions import IBMInputValueError

    missing = raw_submit(deployment, "s-no-such-session")
    assert missing.status_code == 404
    session = Session(backend=service.backend("fake_manila"))
    wrong_backend = raw_submit(deployment, session.session_id, backend="fake_sherbrooke")
    assert wrong_backend.status_code == 400
    session.close()
    with pytest.raises(IBMInputValueError, match="Session not found"):
        Session.from_id("s-no-such-session", service)
