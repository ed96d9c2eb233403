"""Input validation of the job-management and session endpoints, in process on fakeredis."""

from __future__ import annotations

import httpx
import pytest


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"errors", "trace"}
    return str(body["errors"][0]["code"])


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "x"},
        {"limit": "0"},
        {"limit": "5000"},
        {"offset": "-1"},
        {"pending": "maybe"},
        {"sort": "UP"},
        {"created_after": "yesterday"},
    ],
)
async def test_bad_listing_queries_are_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await client.get("/api/v1/jobs", params=params)
    assert response.status_code == 400 and error_code(response) == "bad_request"


async def test_empty_listing(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/jobs", params={"pending": "False", "tags": ["a", "b"]})
    assert response.status_code == 200 and response.json()["count"] == 0 and response.json()["jobs"] == []


async def test_unknown_jobs_are_404_everywhere(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("POST", "/cancel"),
        ("DELETE", ""),
        ("GET", "/metrics"),
        ("GET", "/logs"),
    ]:
        response = await client.request(method, f"/api/v1/jobs/nope{path}")
        assert response.status_code == 404 and error_code(response) == "not_found"
    response = await client.put("/api/v1/jobs/nope/tags", json={"tags": ["a"]})
    assert response.status_code == 404


async def test_session_validation(client: httpx.AsyncClient) -> None:
    bad_mode = await client.post("/api/v1/sessions", json={"mode": "solo", "backend": "fake_manila"})
    assert bad_mode.status_code == 400
    no_backend = await client.post("/api/v1/sessions", json={"mode": "batch"})
    assert no_backend.status_code == 400
    unknown = await client.post("/api/v1/sessions", json={"mode": "batch", "backend": "fake_nowhere"})
    assert unknown.status_code == 404
    too_long = await client.post("/api/v1/sessions", json={"backend": "fake_manila", "max_ttl": 10**9})
    assert too_long.status_code == 400
    created = await client.post("/api/v1/sessions", json={"mode": "batch", "backend": "fake_manila", "max_ttl": 60})
    session = created.json()
    assert created.status_code == 200 and session["state"] == "open" and session["interactive_ttl"] is None
    path = f"/api/v1/sessions/{session['id']}"
    assert (await client.patch(path, json={"accepting_jobs": "no"})).status_code == 400
    assert (await client.patch(path, json={"state": "closed"})).status_code == 400
    assert (await client.patch(path, json={"accepting_jobs": False})).status_code == 204
    assert (await client.get(path)).json()["state"] == "closed"
    assert (await client.delete(f"{path}/close")).status_code == 204
    assert (await client.get("/api/v1/sessions/nope")).status_code == 404
