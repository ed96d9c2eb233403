"""Every answer of the runtime routes checked against IBM's API schema, over raw REST.

The schema (tests/schemas/ibm_runtime_api_0.21.2.json) is the one the QRMI client was generated
from, "Qiskit Runtime API" 0.21.2, reconstructed from that generated client; a client generated
from IBM's document refuses anything else (a ``null`` cost, a status name it does not know, JSON
where the document gives text). The requests are IBM's own: the sampler and estimator PUBs with
OpenQASM 3 circuits of qiskit-community/technical-integration-guidance's REST notebooks
(rest_api_IBM_Cloud.ipynb, rest_api_IQP_sampler.ipynb, rest_api_IQP_estimator.ipynb; trailing
blanks dropped), beside QPY.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import Deployment
from tests.e2e.helpers import bell


def _optional_may_be_null(node: Any) -> Any:
    """The schema as the generated client reads it: an optional field (serde ``Option<T>``) takes
    ``null`` as absent, so ``null`` is allowed wherever a property is not required. Required
    fields (``cost``, ``queue_length``, ...) stay non-null."""
    if isinstance(node, list):
        return [_optional_may_be_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _optional_may_be_null(value) for key, value in node.items()}
    if isinstance(out.get("properties"), dict):
        required = set(out.get("required", []))
        out["properties"] = {
            name: sub if name in required else {"anyOf": [{"type": "null"}, sub]}
            for name, sub in out["properties"].items()
        }
    return out


SCHEMA = _optional_may_be_null(
    json.loads((Path(__file__).parent.parent / "schemas" / "ibm_runtime_api_0.21.2.json").read_text())
)
# The version QRMI 0.26 sends; the device objects are IBM's answer from 2025-01-01 on.
QRMI_API_VERSION = "2025-01-01"

# rest_api_IBM_Cloud.ipynb, cell 10 (sent there as ``"pubs": [[qasm_string]]``).
NOTEBOOK_ONE_QUBIT = """
OPENQASM 3;
include "stdgates.inc";
qreg q[1];
creg c[1];
x q[0];
c[0] = measure q[0];
"""
# rest_api_IQP_sampler.ipynb, cell 9: on fake_manila (basis cx, id, rz, sx, x; 0-1 coupled) ISA as is.
NOTEBOOK_BELL = """
OPENQASM 3;
include "stdgates.inc";
qreg q[2];
creg c[2];
x q[0];
cx q[0], q[1];
c[0] = measure q[0];
c[1] = measure q[1];
"""


def check(body: Any, definition: str) -> None:
    """Validate ``body`` against the schema's ``definition``; the error names the failing path."""
    validator = jsonschema.Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{definition}"})
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


class Api:
    """Raw REST calls as a generated client makes them, every JSON answer validated."""

    def __init__(self, deployment: Deployment) -> None:
        token = httpx.post(f"{deployment.base}/identity/token", data={"apikey": "test-api-key"}).json()
        self.http = httpx.Client(
            base_url=f"{deployment.base}/api/v1",
            headers={"Authorization": f"Bearer {token['access_token']}", "IBM-API-Version": QRMI_API_VERSION},
            timeout=120,
        )

    def json(self, method: str, path: str, definition: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json"), response.headers
        body = response.json()
        check(body, definition)
        return body

    def text(self, path: str) -> str:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain"), response.headers
        return response.text

    def submit(self, body: dict[str, Any]) -> str:
        from qiskit_ibm_runtime import RuntimeEncoder

        content = json.dumps(body, cls=RuntimeEncoder)
        answer = self.json("POST", "/jobs", "CreateJob200Response", content=content)
        return str(answer["id"])

    def finish(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while True:
            job: dict[str, Any] = self.json("GET", f"/jobs/{job_id}", "JobResponse")
            if job["state"]["status"] in ("Completed", "Failed", "Cancelled") or time.monotonic() > deadline:
                return job
            time.sleep(0.2)


@pytest.fixture(scope="module")
def api(embedded: Deployment) -> Api:
    return Api(embedded)


def test_backend_routes_match_ibm_schema(api: Api) -> None:
    listing = api.json("GET", "/backends", "BackendsResponseV2")
    names = [d["name"] for d in listing["devices"]]
    assert "fake_manila" in names and "ibm_brisbane" in names
    # Aliases are online too (IBM's schema has online, paused, offline only).
    assert {d["status"]["name"] for d in listing["devices"]} == {"online"}
    assert any(isinstance(d.get("processor_type"), dict) for d in listing["devices"])
    api.json("GET", "/backends", "BackendsResponseV2", params={"include_mocks": "true"})
    api.json("GET", "/backends/fake_manila/status", "BackendStatusResponse")
    api.json("GET", "/backends/ibm_brisbane/status", "BackendStatusResponse")
    api.json("GET", "/backends/fake_manila/configuration", "AnyObject")
    api.json("GET", "/backends/fake_manila/properties", "AnyObject")
    api.json("GET", "/instances/usage", "GetUsage200Response")


def test_qasm3_and_qpy_jobs_in_a_session_match_ibm_schema(api: Api) -> None:
    from qiskit import QuantumCircuit
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    session = api.json(
        "POST", "/sessions", "CreateSession200Response", json={"backend": "fake_manila", "mode": "batch"}
    )
    qpy = bell(FakeManilaV2())
    observable_circuit = QuantumCircuit(2)
    observable_circuit.x(0)
    sampler = api.submit(
        {
            "program_id": "sampler",
            "backend": "fake_manila",
            "session_id": session["id"],
            "params": {"pubs": [[NOTEBOOK_BELL], [NOTEBOOK_ONE_QUBIT, None, 500], [qpy, None, 100]], "version": 2},
        }
    )
    # rest_api_IQP_estimator.ipynb's PUB shape: [qasm, {pauli: coefficient}, None].
    estimator = api.submit(
        {
            "program_id": "estimator",
            "backend": "fake_manila",
            "session_id": session["id"],
            "params": {
                "pubs": [[NOTEBOOK_ONE_QUBIT.replace("c[0] = measure q[0];", ""), {"Z": 1.0}, None]],
                "options": {"default_precision": 0.05},
                "version": 2,
            },
        }
    )
    for job_id in (sampler, estimator):
        job = api.finish(job_id)
        assert job["state"]["status"] == "Completed", job
        assert isinstance(job["cost"], int) and job["cost"] > 0
    api.json("GET", f"/sessions/{session['id']}", "CreateSession200Response")
    listing = api.json("GET", "/jobs", "JobsResponse", params={"limit": 5, "offset": 0, "session_id": session["id"]})
    assert listing["offset"] == 0 and listing["limit"] == 5 and listing["count"] == 2
    # GET /jobs/{id}/metrics is not checked: IBM's 0.21.2 document gives its seconds as integers,
    # this server the fractional seconds qiskit-ibm-runtime's job.usage() reports; QRMI reads none.
    assert json.loads(api.text(f"/jobs/{sampler}/results"))["__type__"] == "PrimitiveResult"
    api.text(f"/jobs/{sampler}/logs")
    from qiskit_ibm_runtime import RuntimeDecoder

    result = json.loads(api.text(f"/jobs/{sampler}/results"), cls=RuntimeDecoder)
    counts0 = result[0].data.c.get_counts()  # x then cx: "11", up to the device's noise
    assert max(counts0, key=counts0.__getitem__) == "11"
    assert result[1].data.c.num_shots == 500
    value = json.loads(api.text(f"/jobs/{estimator}/results"), cls=RuntimeDecoder)[0].data.evs
    assert float(value) == pytest.approx(-1.0, abs=0.2)
    closed = api.http.delete(f"/sessions/{session['id']}/close")
    assert closed.status_code == 204


@pytest.mark.parametrize(
    ("pub", "fragment"),
    [
        ("", "PUB 0: the OpenQASM 3 circuit is empty."),
        ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];', "PUB 0: line 1: OpenQASM 2 is not accepted"),
        (
            "OPENQASM 3;\nqubit[2] q;\nU(0, 0, 0 q[0];\n",
            "PUB 0: the OpenQASM 3 circuit could not be parsed: line 3: '(' is never closed.",
        ),
    ],
)
def test_bad_qasm_is_400_at_submission(api: Api, pub: str, fragment: str) -> None:
    answer = api.http.post(
        "/jobs", json={"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [[pub]]}}
    )
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["errors"][0]["message"]


def test_qasm_the_scan_passes_fails_the_job_with_pub_and_line(api: Api) -> None:
    bad = 'OPENQASM 3;\ninclude "stdgates.inc";\nqubit[2] q;\nh q[0]\ncx q[0], q[1];\n'
    job = api.finish(
        api.submit({"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [["x $0;"], [bad]]}})
    )
    assert job["state"]["status"] == "Failed"
    assert (
        "PUB 0: the OpenQASM 3 circuit could not be parsed: line 1, column 0: gate 'x' is not defined."
        in job["state"]["reason"]
    )
    job = api.finish(api.submit({"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [[bad]]}}))
    assert (
        "PUB 0: the OpenQASM 3 circuit could not be parsed: line 5, column 0: syntax error at 'cx'"
        in job["state"]["reason"]
    )
    assert api.text(f"/jobs/{job['id']}/results")
    # Not ISA on the device: the same check and message as a QPY circuit.
    not_isa = 'OPENQASM 3;\ninclude "stdgates.inc";\nqubit[1] q;\nh q[0];\n'
    job = api.finish(api.submit({"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [[not_isa]]}}))
    assert "PUB 0: The instruction h on qubits (0,) is not supported by the target system." in job["state"]["reason"]
