"""The ``IBM-API-Version`` dialects (api/api_version.py) and ``/backends/{name}/defaults``.

qiskit-ibm-runtime 0.40 sends ``2024-01-01`` and reads ``devices`` as names; 0.41 to 0.47 send
``2025-05-01``, 0.48 and later ``2026-04-15``, both reading ``devices`` as objects; QRMI sends
``2025-01-01``, the first version IBM answers with objects.
"""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request

from qiskit_runtime_server.api.api_version import lists_device_names, requested_version

NAMES_VERSION = {"IBM-API-Version": "2024-01-01"}


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "query_string": b""})


@pytest.mark.parametrize(
    ("headers", "names"),
    [
        ({"IBM-API-Version": "2024-01-01"}, True),
        ({"ibm-api-version": " 2024-12-31 "}, True),
        ({"IBM-API-Version": "2025-01-01"}, False),
        ({"IBM-API-Version": "2025-05-01"}, False),
        ({"IBM-API-Version": "2026-04-15"}, False),
        ({"IBM-API-Version": "not-a-date"}, False),
        ({}, False),
    ],
)
def test_only_versions_before_2025_01_01_list_names(headers: dict[str, str], names: bool) -> None:
    assert lists_device_names(_request(headers)) is names


def test_requested_version_is_none_without_a_date() -> None:
    assert requested_version(_request({})) is None
    assert requested_version(_request({"IBM-API-Version": "2024"})) is None
    assert str(requested_version(_request(NAMES_VERSION))) == "2024-01-01"


async def _devices(client: httpx.AsyncClient, headers: dict[str, str], **params: str) -> list[object]:
    response = await client.get("/api/v1/backends", headers=headers, params=params)
    assert response.status_code == 200, response.text
    devices: list[object] = response.json()["devices"]
    return devices


async def test_version_2024_01_01_lists_the_same_names_as_strings(client: httpx.AsyncClient) -> None:
    for params in ({}, {"include_mocks": "True"}):
        current = await _devices(client, {"IBM-API-Version": "2026-04-15"}, **params)
        names = await _devices(client, NAMES_VERSION, **params)
        assert all(isinstance(d, dict) for d in current)
        assert names == [d["name"] for d in current if isinstance(d, dict)]
        assert "fake_manila" in names and "ibmq_manila" in names  # IBM names too: backend(name) needs them
        assert any(n.startswith("mock_") for n in names if isinstance(n, str)) == bool(params)


async def test_other_versions_keep_the_device_objects(client: httpx.AsyncClient) -> None:
    for headers in (
        {"IBM-API-Version": "2025-01-01"},
        {"IBM-API-Version": "2025-05-01"},
        {"IBM-API-Version": "2026-04-15"},
        {},
    ):
        devices = await _devices(client, headers)
        manila = next(d for d in devices if isinstance(d, dict) and d["name"] == "fake_manila")
        assert manila["status"] == {"name": "online", "reason": "available"} and manila["qubits"] == 5


async def test_the_version_is_read_per_request(client: httpx.AsyncClient) -> None:
    kinds = [type((await _devices(client, h))[0]) for h in (NAMES_VERSION, {}, NAMES_VERSION, {})]
    assert kinds == [str, dict, str, dict]


async def test_defaults_is_null_for_every_served_name(client: httpx.AsyncClient) -> None:
    # qiskit-ibm-runtime 0.40's IBMBackend.defaults() keeps None for a falsy body; a 4xx would
    # raise RequestsApiError out of hasattr(backend, ...) and an empty body a JSON error.
    for name in ("fake_manila", "ibmq_manila", "mock_manila"):
        for headers in (NAMES_VERSION, {}):
            response = await client.get(f"/api/v1/backends/{name}/defaults", headers=headers)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.content == b"null"


async def test_defaults_of_an_unknown_backend_is_404_and_needs_credentials(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/backends/fake_nowhere/defaults", headers=NAMES_VERSION)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "not_found"
    anonymous = await client.get("/api/v1/backends/fake_manila/defaults", headers={"Authorization": ""})
    assert anonymous.status_code == 401
