"""IBM's validation, private jobs and hidden mock jobs, over real HTTP.

Validation is tested with raw HTTP (params encoded by the client's own ``RuntimeEncoder``, so
the client's checks are bypassed as any other HTTP caller would) and with the unmodified client
where its own checks let the job through (the executor primitives do not check ISA; shots over
the server's limit pass ``SamplerPub``).
"""

from __future__ import annotations

import json
import uuid
import warnings

import httpx
import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

from tests.conftest import Deployment
from tests.e2e.helpers import bell, wait_until

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")

NOT_ISA = "is not supported by the target system"


def _headers(base: str) -> dict[str, str]:
    token = httpx.post(f"{base}/identity/token", data={"apikey": "test-api-key"}).json()
    return {"Authorization": f"Bearer {token['access_token']}", "Content-Type": "application/json"}


def _post(deployment: Deployment, program_id: str, backend: str, params: dict) -> httpx.Response:
    from qiskit_ibm_runtime import RuntimeEncoder

    body = json.dumps({"program_id": program_id, "backend": backend, "params": params}, cls=RuntimeEncoder)
    return httpx.post(f"{deployment.base}/api/v1/jobs", content=body, headers=_headers(deployment.base))


def _final_view(deployment: Deployment, job_id: str) -> dict:
    url, headers = f"{deployment.base}/api/v1/jobs/{job_id}", _headers(deployment.base)
    views: list[dict] = []

    def final() -> bool:
        views.append(httpx.get(url, params={"exclude_params": "true"}, headers=headers).json())
        return views[-1]["state"]["status"] in ("Completed", "Failed", "Cancelled")

    wait_until(final, what=f"job {job_id} to finish")
    return views[-1]


def _assert_refused(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"errors", "trace"}
    [error] = body["errors"]
    assert set(error) == {"code", "message", "more_info"} and error["code"] == "bad_request"
    assert fragment in error["message"]


# --- ISA: failed by the worker before any simulation -------------------------------------------


def _h_circuit() -> QuantumCircuit:
    """``h`` is no gate of fake_sherbrooke (``ecr, rz, sx, x``)."""
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.measure_all()
    return qc


def _unconnected_ecr() -> QuantumCircuit:
    """Only sherbrooke gates, but ``ecr`` on (0, 2): no such pair in its coupling map."""
    qc = QuantumCircuit(3)
    qc.x(0)
    qc.ecr(0, 2)
    qc.measure_all()
    return qc


@pytest.mark.parametrize(
    ("circuit", "expected"),
    [
        (_h_circuit, "The instruction h on qubits (0,) is not supported by the target system."),
        (_unconnected_ecr, "The instruction ecr on qubits (0, 2) is not supported by the target system."),
    ],
)
def test_non_isa_sampler_pub_from_raw_http_fails_with_ibm_error(deployment, circuit, expected: str) -> None:
    params = {"pubs": [(circuit(), np.array([]), 100)], "options": {}, "version": 2, "support_qiskit": True}
    response = _post(deployment, "sampler", "fake_sherbrooke", params)
    assert response.status_code == 200, response.text
    view = _final_view(deployment, response.json()["id"])
    assert view["state"]["status"] == "Failed"
    assert view["state"]["reason_code"] == 1517
    assert f"PUB 0: {expected}" in view["state"]["reason"]
    assert "Circuits that do not match the target hardware definition" in view["state"]["reason"]


def test_non_isa_estimator_pub_from_raw_http_fails(deployment) -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    params = {"pubs": [(qc, SparsePauliOp("ZZ"), np.array([]), None)], "options": {}, "version": 2}
    response = _post(deployment, "estimator", "ibm_sherbrooke", params)
    assert response.status_code == 200, response.text
    view = _final_view(deployment, response.json()["id"])
    assert view["state"]["reason_code"] == 1517
    assert "The instruction h on qubits (0,) is not supported" in view["state"]["reason"]


def test_isa_circuit_from_raw_http_still_runs(deployment, service) -> None:
    isa = bell(service.backend("fake_sherbrooke"))
    params = {"pubs": [(isa, np.array([]), 100)], "options": {}, "version": 2, "support_qiskit": True}
    response = _post(deployment, "sampler", "fake_sherbrooke", params)
    assert _final_view(deployment, response.json()["id"])["state"]["status"] == "Completed"


def test_executor_sampler_with_non_isa_circuit_fails_with_ibm_error(service) -> None:
    """The executor Sampler sends circuits unchecked; the server refuses them as IBM does."""
    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError
    from qiskit_ibm_runtime.executor_sampler import Sampler

    backend = service.backend("fake_sherbrooke")
    job = Sampler(mode=backend).run([_h_circuit()], shots=100)
    with pytest.raises(RuntimeJobFailureError, match=r"Error code 1517.*Item 0: The instruction h on qubits \(0,\)"):
        job.result()
    # Dry runs check the same: a mock device has its device's target.
    dry = Sampler(mode=service.backend("mock_sherbrooke")).run([_unconnected_ecr()], shots=100)
    with pytest.raises(RuntimeJobFailureError, match=r"ecr on qubits \(0, 2\)"):
        dry.result()


def test_sampler_v2_refuses_non_isa_locally(service) -> None:
    """The client's own check (unchanged): SamplerV2 raises before sending anything."""
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import IBMInputValueError

    with pytest.raises(IBMInputValueError, match=NOT_ISA):
        SamplerV2(mode=service.backend("fake_sherbrooke")).run([_h_circuit()])


# --- shots and precision: refused at POST /jobs ------------------------------------------------


def _sampler_params(shots: object, default_shots: object = None) -> dict:
    qc = QuantumCircuit(1)
    qc.x(0)
    qc.measure_all()
    options = {} if default_shots is None else {"default_shots": default_shots}
    return {"pubs": [(qc, np.array([]), shots)], "options": options, "version": 2, "support_qiskit": True}


def _estimator_params(precision: object, default_precision: object = None) -> dict:
    qc = QuantumCircuit(1)
    qc.x(0)
    options = {} if default_precision is None else {"default_precision": default_precision}
    return {"pubs": [(qc, SparsePauliOp("Z"), np.array([]), precision)], "options": options, "version": 2}


@pytest.mark.parametrize(
    ("program", "params", "fragment"),
    [
        ("sampler", _sampler_params(0), "PUB 0: shots must be a positive integer, got 0."),
        ("sampler", _sampler_params(-5), "shots must be a positive integer, got -5"),
        ("sampler", _sampler_params(10.5), "shots must be a positive integer, got 10.5"),
        ("sampler", _sampler_params("100"), "shots must be a positive integer, got '100'"),
        ("sampler", _sampler_params(True), "shots must be a positive integer, got True"),
        ("sampler", _sampler_params(10_000_001), "10000001 shots requested, at most 10000000 are allowed"),
        ("sampler", _sampler_params(None, default_shots=0), "options.default_shots: shots must be a positive"),
        ("estimator", _estimator_params(0), "PUB 0: precision must be a positive number, got 0."),
        ("estimator", _estimator_params(-0.1), "precision must be a positive number, got -0.1"),
        ("estimator", _estimator_params("high"), "precision must be a positive number, got 'high'"),
        ("estimator", _estimator_params(None, default_precision=0.0), "options.default_precision: precision"),
    ],
)
def test_bad_shots_and_precision_refused_at_submission(embedded, program: str, params: dict, fragment: str) -> None:
    _assert_refused(_post(embedded, program, "fake_manila", params), fragment)


def test_good_shots_and_precision_accepted(embedded) -> None:
    for program, params in (("sampler", _sampler_params(7)), ("estimator", _estimator_params(0.05))):
        response = _post(embedded, program, "fake_manila", params)
        assert response.status_code == 200, response.text
        assert _final_view(embedded, response.json()["id"])["state"]["status"] == "Completed"


def test_client_gets_ibm_error_for_too_many_shots(service) -> None:
    """Shots over the limit pass the client's PUB checks; POST /jobs refuses them (the client's
    own check refuses a precision <= 0, so precision is tested with raw HTTP above)."""
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import IBMRuntimeError

    backend = service.backend("fake_manila")
    with pytest.raises(IBMRuntimeError, match=r"400 Client Error.*at most 10000000 are allowed"):
        SamplerV2(mode=backend).run([bell(backend)], shots=10_000_001)


# --- private jobs --------------------------------------------------------------------------------


def test_private_job_hides_inputs_and_results_read_once(deployment, service) -> None:
    """The client's own ``test_private_option``: inputs hidden, ``job.result()`` truthy once, then
    falsy (IBM answers the second read 200 with an empty body)."""
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_manila")
    sampler = SamplerV2(mode=backend)
    sampler.options.environment.private = True
    job = sampler.run([bell(backend)], shots=100)
    assert job.private is True
    headers = _headers(deployment.base)
    # Inputs are never returned, not even while the job is live.
    assert "params" not in httpx.get(f"{deployment.base}/api/v1/jobs/{job.job_id()}", headers=headers).json()
    assert not job.inputs
    result = job.result()
    assert result
    assert sum(result[0].data.meas.get_counts().values()) == 100
    assert not job.result()  # private job results can only be retrieved once
    assert job.private
    again = service.job(job.job_id())
    assert again.private is True and again.inputs == {}
    assert again.result() is None
    raw = httpx.get(f"{deployment.base}/api/v1/jobs/{job.job_id()}/results", headers=headers)
    assert raw.status_code == 200 and raw.content == b""
    # The job itself stays listed and its status readable.
    assert again.status() == "DONE"


def test_public_job_keeps_inputs_and_results(service) -> None:
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_manila")
    job = SamplerV2(mode=backend).run([bell(backend)], shots=50)
    job.result()
    assert job.result()[0].data.meas.num_shots == 50
    assert job.inputs["pubs"][0][2] == 50


# --- mock jobs hidden from service.jobs() ----------------------------------------------------------


def test_mock_jobs_listed_only_with_include_mocks(service) -> None:
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_manila")
    tag = f"mocks-{uuid.uuid4().hex[:8]}"
    sampler = SamplerV2(mode=backend)
    sampler.options.environment.job_tags = [tag]
    real = sampler.run([bell(backend)], shots=20)
    dry = sampler.run([bell(backend)], shots=20, dry_run=True)
    real.result()
    dry.result()
    assert dry.backend().name == "mock_manila"
    assert [j.job_id() for j in service.jobs(job_tags=[tag])] == [real.job_id()]
    assert {j.job_id() for j in service.jobs(job_tags=[tag], include_mocks=True)} == {real.job_id(), dry.job_id()}
    # Unfiltered listings hide it too; naming the mock device lists its jobs.
    assert dry.job_id() not in {j.job_id() for j in service.jobs(limit=100)}
    assert [j.job_id() for j in service.jobs(backend_name="mock_manila", job_tags=[tag])] == [dry.job_id()]
