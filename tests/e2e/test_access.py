"""Instance isolation (open mode) and access control with a key -> instances mapping and usage limits."""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Deployment, embedded_server
from tests.e2e.helpers import bell

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")

OTHER = "crn:v1:bluemix:public:quantum-computing:us-east:a/other:other-instance::"
CRN_A = "crn:v1:bluemix:public:quantum-computing:us-east:a/acct:alice-instance::"
CRN_B = "crn:v1:bluemix:public:quantum-computing:us-east:a/acct:bob-instance::"


def client_for(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, token: str, instance: str | None = None):  # type: ignore[no-untyped-def]
    """A real client with ``token``; with ``instance`` it skips Global Search (the CRN is used as is)."""
    from qiskit_ibm_runtime import QiskitRuntimeService

    for key, value in deployment.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("QISKIT_IBM_TOKEN", token)
    monkeypatch.delenv("QISKIT_IBM_INSTANCE", raising=False)
    if instance is None:
        monkeypatch.delenv("QISKIT_FUNCTIONS_EXPERIMENTAL", raising=False)
        return QiskitRuntimeService()
    monkeypatch.setenv("QISKIT_FUNCTIONS_EXPERIMENTAL", "1")
    return QiskitRuntimeService(
        channel="ibm_quantum_platform", token=token, instance=instance, url=f"{deployment.base}/experimental/api/v1"
    )


def test_another_instance_sees_nothing(deployment, service, monkeypatch: pytest.MonkeyPatch) -> None:
    from qiskit_ibm_runtime import SamplerV2, Session
    from qiskit_ibm_runtime.exceptions import IBMInputValueError, RuntimeJobNotFound

    tag = f"iso-{uuid.uuid4().hex[:8]}"
    backend = service.backend("fake_manila")
    session = Session(backend=backend)
    job = SamplerV2(mode=session, options={"environment": {"job_tags": [tag]}}).run([bell(backend)], shots=10)
    job.result()
    other = client_for(deployment, monkeypatch, "test-api-key", OTHER)
    with pytest.raises(RuntimeJobNotFound):
        other.job(job.job_id())
    assert other.jobs(job_tags=[tag]) == []
    assert other.jobs(session_id=session.session_id) == []
    with pytest.raises(RuntimeJobNotFound):
        other.delete_job(job.job_id())
    with pytest.raises(IBMInputValueError):
        Session.from_id(session.session_id, other)
    assert [j.job_id() for j in service.jobs(job_tags=[tag])] == [job.job_id()]
    session.close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """An embedded server with access control on: alice -> A, bob -> B, B limited to ~0 seconds."""
    folder = tmp_path_factory.mktemp("guarded")
    access = folder / "access.json"
    access.write_text(json.dumps({"keys": {"bob": [CRN_B]}, "usage_limits": {CRN_B: 1e-9}}))
    with embedded_server(
        folder, QRS_API_KEYS=f"alice={CRN_A}", QRS_ACCESS_FILE=str(access), QRS_INSTANCE=CRN_A
    ) as deployment:
        yield deployment


def test_unknown_keys_and_foreign_instances_are_refused(guarded: Deployment) -> None:
    base = guarded.base
    assert httpx.post(f"{base}/identity/token", data={"apikey": "mallory"}).status_code == 400
    assert httpx.get(f"{base}/api/v1/jobs", headers={"Authorization": "apikey mallory"}).status_code == 401
    assert httpx.get(f"{base}/api/v1/jobs", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    token = httpx.post(f"{base}/identity/token", data={"apikey": "alice"}).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{base}/api/v1/jobs", headers={**auth, "Service-CRN": CRN_A}).status_code == 200
    refused = httpx.get(f"{base}/api/v1/jobs", headers={**auth, "Service-CRN": CRN_B})
    assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "forbidden"
    search = httpx.post(f"{base}/search/v3/resources/search", headers=auth, json={}).json()
    assert [item["crn"] for item in search["items"]] == [CRN_A]


def test_keys_reach_only_their_instances_and_limits_apply(guarded: Deployment, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import IBMRuntimeError

    alice = client_for(guarded, monkeypatch, "alice")  # instance found through Global Search
    backend = alice.backend("fake_manila")
    assert SamplerV2(mode=backend).run([bell(backend)], shots=10).result()[0].data.meas.num_shots == 10
    assert alice.usage()["usage_limit_seconds"] is None

    bob = client_for(guarded, monkeypatch, "bob", CRN_B)
    backend = bob.backend("fake_manila")
    SamplerV2(mode=backend).run([bell(backend)], shots=10).result()
    usage = bob.usage()
    assert usage["usage_limit_reached"] is True and usage["usage_limit_seconds"] == pytest.approx(1e-9)
    # The client warns from usage_limit_reached, then the server refuses the job (403).
    with pytest.warns(UserWarning, match="usage limit"), pytest.raises(IBMRuntimeError, match="usage limit"):
        SamplerV2(mode=backend).run([bell(backend)], shots=10)
    assert alice.jobs() and not {j.job_id() for j in bob.jobs()} & {j.job_id() for j in alice.jobs()}
