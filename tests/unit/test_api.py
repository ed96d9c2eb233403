"""The API in process on fakeredis: auth, backends, job submission validation and errors."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.unit.conftest import in_process_api


def test_api_does_not_import_qiskit() -> None:
    code = (
        "import sys, qiskit_runtime_server.api.app, qiskit_runtime_server.cli; "
        "loaded = {m.split('.')[0] for m in sys.modules}; "
        "assert not loaded & {'qiskit', 'qiskit_aer', 'qiskit_ibm_runtime'}, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_token_is_a_jwt_with_exp_and_iat() -> None:
    import jwt

    async with in_process_api(api_key=None) as http:
        body = (await http.post("/identity/token", data={"apikey": "abc", "grant_type": "x"})).json()
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
        assert claims["exp"] > claims["iat"]
        missing = await http.post("/identity/token", data={"grant_type": "x"})
        assert missing.status_code == 400


async def test_runtime_api_under_any_prefix(client: httpx.AsyncClient) -> None:
    for prefix in ("/api/v1", "/experimental/api/v1", "/a/b/api/v1"):
        response = await client.get(f"{prefix}/backends")
        assert response.status_code == 200
        devices = response.json()["devices"]
        names = [d["name"] for d in devices]
        assert "fake_manila" in names and "fake_sherbrooke" in names
        # Other names of a device (its IBM name) are marked as aliases; no mock without include_mocks.
        assert all(d["name"].startswith("fake_") or d["alias_of"].startswith("fake_") for d in devices)


async def test_backend_documents(client: httpx.AsyncClient) -> None:
    conf = (await client.get("/api/v1/backends/fake_sherbrooke/configuration")).json()
    assert conf["backend_name"] == "fake_sherbrooke" and conf["n_qubits"] == 127
    props = (await client.get("/api/v1/backends/fake_manila/properties")).json()
    assert props["backend_name"] == "fake_manila" and props["qubits"]
    old = await client.get("/api/v1/backends/fake_manila/properties", params={"updated_before": "2000-01-01T00:00:00"})
    assert old.status_code == 200 and old.json() == {}
    status = (await client.get("/api/v1/backends/fake_manila/status")).json()
    assert status["state"] is True and status["length_queue"] == 0


async def test_unknown_backend_is_404_in_ibm_format(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/backends/fake_nowhere/configuration")
    assert response.status_code == 404
    body = response.json()
    assert body["errors"][0]["code"] == "not_found" and "fake_nowhere" in body["errors"][0]["message"]
    assert body["trace"]


async def test_missing_credentials_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/backends", headers={"Authorization": ""})
    assert response.status_code == 401
    bad = await client.get("/api/v1/backends", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    assert (await client.get("/api/v1/backends", headers={"Authorization": "apikey k"})).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 400, "Invalid job submission"),
        (b"[]", 400, "Invalid job submission"),
        (b'{"program_id": "nope", "backend": "fake_manila", "params": {"pubs": [1]}}', 404, "Program nope"),
        (b'{"program_id": "sampler", "backend": "fake_x", "params": {"pubs": [1]}}', 404, "fake_x"),
        (b'{"program_id": "sampler", "params": {"pubs": [1]}}', 400, "backend is required"),
        (b'{"program_id": "sampler", "backend": "fake_manila"}', 400, "params"),
        (b'{"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": []}}', 400, "at least one PUB"),
        (b'{"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": 3}}', 400, "pubs"),
        (b'{"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [1]}, "cost": -1}', 400, "cost"),
        (
            b'{"program_id": "executor", "backend": "fake_manila", "params": {"quantum_program": {}}}',
            400,
            "schema_version",
        ),
        (
            b'{"program_id": "executor", "backend": "fake_manila", '
            b'"params": {"schema_version": "v0.9", "quantum_program": {"items": []}}}',
            400,
            "Unsupported executor schema_version 'v0.9'",
        ),
        (
            b'{"program_id": "executor", "backend": "fake_manila", "params": {"schema_version": "v2.0"}}',
            400,
            "quantum_program",
        ),
        (
            b'{"program_id": "executor", "backend": "fake_manila", '
            b'"params": {"schema_version": "v2.0", "quantum_program": {"items": 1}}}',
            400,
            "items must be a list",
        ),
    ],
)
async def test_bad_submissions(client: httpx.AsyncClient, body: bytes, status: int, fragment: str) -> None:
    response = await client.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["errors"][0]["message"]


async def test_oversize_submission_is_413() -> None:
    async with in_process_api({"QRS_MAX_PARAMS_BYTES": "1000"}, api_key=None) as http:
        body = b'{"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": ["' + b"x" * 2000 + b'"]}}'
        response = await http.post("/api/v1/jobs", content=body, headers={"Authorization": "apikey k"})
        assert response.status_code == 413


async def test_submit_queues_and_stores_params_verbatim(client: httpx.AsyncClient) -> None:
    params = b'{"pubs": [["anything", null]], "options": {"default_shots": 10}, "version": 2}'
    body = b'{"program_id": "sampler", "backend": "fake_manila", "tags": ["b", "a"], "params": ' + params + b"}"
    response = await client.post("/api/v1/jobs", content=body)
    assert response.status_code == 200
    job_id = response.json()["id"]
    assert response.json()["backend"] == "fake_manila"
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["state"]["status"] == "Queued" and job["program"]["id"] == "sampler"
    assert job["tags"] == ["a", "b"] and job["created"].endswith("Z")
    assert job["params"] == {"pubs": [["anything", None]], "options": {"default_shots": 10}, "version": 2}
    assert "params" not in (await client.get(f"/api/v1/jobs/{job_id}", params={"exclude_params": "true"})).json()
    status = (await client.get("/api/v1/backends/fake_manila/status")).json()
    assert status["length_queue"] == 1
    other = await client.get(f"/api/v1/jobs/{job_id}", headers={"Service-CRN": "crn:other"})
    assert other.status_code == 404


SAMPLER_JOB = b'{"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [1]}}'


async def first_poll_of_a_job_finishing_after(http: httpx.AsyncClient, seconds: float) -> dict[str, object]:
    """Submit a job, have it finish ``seconds`` later, and return the first status poll's answer."""
    import asyncio

    from qiskit_runtime_server.shared.models import JobStatus

    store = http.app_state["store"]  # type: ignore[attr-defined]
    job_id = (await http.post("/api/v1/jobs", content=SAMPLER_JOB)).json()["id"]

    async def finish() -> None:
        await asyncio.sleep(seconds)
        await store.finish(job_id, JobStatus.COMPLETED, b"{}")

    task = asyncio.create_task(finish())
    job: dict[str, object] = (await http.get(f"/api/v1/jobs/{job_id}", params={"exclude_params": "true"})).json()
    await task
    return job


async def test_status_request_waits_briefly_for_a_finishing_job(client: httpx.AsyncClient) -> None:
    job = await first_poll_of_a_job_finishing_after(client, 0.05)
    assert job["state"]["status"] == "Completed"  # type: ignore[index]


async def test_status_hold_lasts_until_the_job_is_hold_seconds_old(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job finishing 0.6 s after submission is seen finished on the first poll (the client's
    next poll would be 0.5 s later); a job older than the hold is answered at once."""
    import time
    import types

    from qiskit_runtime_server.api.routes import jobs as job_routes

    async with in_process_api({"QRS_STATUS_HOLD": "1.5"}) as http:
        first = await first_poll_of_a_job_finishing_after(http, 0.6)
        assert first["state"]["status"] == "Completed"  # type: ignore[index]

        queued = (await http.post("/api/v1/jobs", content=SAMPLER_JOB)).json()["id"]
        later = types.SimpleNamespace(time=lambda: time.time() + 60.0)  # the job is a minute old
        monkeypatch.setattr(job_routes, "time", later)
        started = time.monotonic()
        old = (await http.get(f"/api/v1/jobs/{queued}", params={"exclude_params": "true"})).json()
        assert old["state"]["status"] == "Queued"
        assert time.monotonic() - started < 1.0  # not held for the 1.5 s


async def test_usage_is_in_whole_seconds_as_ibm_gives_it() -> None:
    """``GET /instances/usage``: consumed seconds rounded up and an integral limit as integers, so
    the client's ``usage_remaining_seconds`` (limit - consumed) is an ``int``, as its own
    integration test expects; ``usage_limit_reached`` compares the exact figures."""
    from qiskit_runtime_server.shared.models import JobStatus

    async with in_process_api({"QRS_USAGE_LIMIT_SECONDS": "3"}) as http:
        store = http.app_state["store"]  # type: ignore[attr-defined]
        fresh = (await http.get("/api/v1/instances/usage")).json()
        assert fresh["usage_consumed_seconds"] == 0 and fresh["usage_limit_seconds"] == 3
        job_id = (await http.post("/api/v1/jobs", content=SAMPLER_JOB)).json()["id"]
        await store.finish(job_id, JobStatus.COMPLETED, b"{}", quantum_seconds=2.25)
        usage = (await http.get("/api/v1/instances/usage")).json()
        assert usage["usage_consumed_seconds"] == 3 and isinstance(usage["usage_consumed_seconds"], int)
        assert isinstance(usage["usage_limit_seconds"], int)
        assert usage["usage_limit_reached"] is False  # 2.25 s of 3 used: rounded for display only
