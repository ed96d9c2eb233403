"""``GET /openapi.json``: an OpenAPI 3.1 document of every mounted route."""

from __future__ import annotations

import httpx

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.api.openapi import OPERATIONS, mounted_operations
from qiskit_runtime_server.shared.settings import load_settings


async def test_openapi_document_lists_every_mounted_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.")
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    mounted = set(mounted_operations(create_app(load_settings({})).routes))
    assert ("POST", "/api/v1/jobs") in mounted and ("GET", "/openapi.json") in mounted
    assert listed == mounted
    # Every mounted route is described (summary, parameters, body), not just listed.
    assert mounted <= set(OPERATIONS), sorted(mounted - set(OPERATIONS))
    assert set(OPERATIONS) <= mounted, sorted(set(OPERATIONS) - mounted)


async def test_openapi_document_has_the_request_bodies(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths, schemas = document["paths"], document["components"]["schemas"]

    def body_schema(method: str, path: str) -> dict[str, object]:
        content = paths[path][method]["requestBody"]["content"]
        (media,) = content.values()
        reference: str = media["schema"]["$ref"]
        return schemas[reference.rsplit("/", 1)[-1]]  # type: ignore[no-any-return]

    submission = body_schema("post", "/api/v1/jobs")
    assert submission["required"] == ["program_id"]
    assert {"backend", "params", "tags", "session_id"} <= set(submission["properties"])  # type: ignore[arg-type]
    assert body_schema("put", "/api/v1/jobs/{job_id}/tags")["properties"] == {
        "tags": {"type": "array", "items": {"type": "string"}}
    }
    assert "mode" in body_schema("post", "/api/v1/sessions")["properties"]  # type: ignore[operator]
    assert "accepting_jobs" in body_schema("patch", "/api/v1/sessions/{session_id}")["properties"]  # type: ignore[operator]
    assert "apikey" in body_schema("post", "/identity/token")["properties"]  # type: ignore[operator]
    listing = {p["name"] for p in paths["/api/v1/jobs"]["get"]["parameters"]}
    assert {"limit", "offset", "tags", "pending", "created_after", "sort"} <= listing
    assert paths["/api/v1/jobs/{job_id}"]["get"]["parameters"][0] == {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
