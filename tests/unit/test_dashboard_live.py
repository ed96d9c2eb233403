"""``WS /dashboard/ws``: job state changes pushed from ``qrs:job-events``, per-viewer filtering,
bounded buffers (slow consumers dropped), and the page and its static files."""

from __future__ import annotations

import asyncio
import re

from starlette.testclient import TestClient

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.api.dashboard.live import BUFFER, LiveHub, _Connection
from qiskit_runtime_server.api.dashboard.viewer import Viewer
from qiskit_runtime_server.shared.settings import load_settings

A = "crn:v1:bluemix:public:quantum-computing:us-east:a/a:inst-a::"
B = "crn:v1:bluemix:public:quantum-computing:us-east:a/b:inst-b::"
# TestClient's default host, "testserver", is not one the server answers (api/origins.py).
WS = "ws://localhost/dashboard/ws"
BODY = b'{"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [["x", null]]}}'


def _submit(http: TestClient, key: str, instance: str) -> str:
    token = http.post("/identity/token", data={"apikey": key}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Service-CRN": instance}
    response = http.post("/api/v1/jobs", content=BODY, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_open_mode_pushes_every_state_change() -> None:
    with (
        TestClient(create_app(load_settings({})), base_url="http://localhost") as http,
        http.websocket_connect(WS) as ws,
    ):
        ws.send_json({})
        assert ws.receive_json() == {"type": "hello", "operator": True}
        job_id = _submit(http, "k", A)
        event = ws.receive_json()
        assert event["type"] == "job" and event["job"]["id"] == job_id and event["job"]["status"] == "Queued"
        cancel = http.post(f"/api/v1/jobs/{job_id}/cancel", headers={"Authorization": "apikey k", "Service-CRN": A})
        assert cancel.status_code == 204
        assert ws.receive_json()["job"]["status"] == "Cancelled"


def test_instance_key_gets_only_its_instances_events() -> None:
    settings = load_settings({"QRS_API_KEYS": f"key-a={A};key-b={B}", "QRS_ADMIN_KEYS": "ops"})
    with TestClient(create_app(settings), base_url="http://localhost") as http:
        with http.websocket_connect(WS) as ws:
            ws.send_json({"key": "nope"})
            assert ws.receive_json()["type"] == "error"
        with http.websocket_connect(WS) as wa, http.websocket_connect(WS) as ops:
            wa.send_json({"key": "key-a"})
            ops.send_json({"key": "ops"})
            assert wa.receive_json()["operator"] is False and ops.receive_json()["operator"] is True
            b_job = _submit(http, "key-b", B)
            a_job = _submit(http, "key-a", A)
            assert ops.receive_json()["job"]["id"] == b_job
            assert ops.receive_json()["job"]["id"] == a_job
            # B's job came first; A's connection's first event is A's own.
            assert wa.receive_json()["job"]["id"] == a_job


async def test_slow_consumer_is_dropped_not_buffered() -> None:
    hub = LiveHub.__new__(LiveHub)
    hub._connections = set()
    hub.dropped = 0
    slow, other = _Connection(Viewer(None, True)), _Connection(Viewer(frozenset({B}), False))
    hub._connections |= {slow, other}
    for i in range(BUFFER + 5):
        hub._event(f'{{"instance": "{A}", "id": "j{i}"}}')
    assert slow.dropped.is_set() and slow.queue.qsize() == BUFFER and hub.dropped == 1
    assert other.queue.qsize() == 0 and not other.dropped.is_set()
    await asyncio.sleep(0)


def test_page_and_static_files_are_served() -> None:
    with TestClient(create_app(load_settings({})), base_url="http://localhost") as http:
        page = http.get("/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "/dashboard/static/dashboard.js" in page.text
        assert http.get("/dashboard/static/dashboard.js").status_code == 200
        assert http.get("/dashboard/static/vendor/chart.umd.min.js").status_code == 200
        assert "MIT" in http.get("/dashboard/static/vendor/chart.js.LICENSE.md").text


def test_page_is_served_with_a_self_only_csp_and_may_not_be_framed() -> None:
    with TestClient(create_app(load_settings({})), base_url="http://localhost") as http:
        page = http.get("/dashboard")
    policy = dict(
        (name, rest.strip())
        for name, _, rest in (d.strip().partition(" ") for d in page.headers["content-security-policy"].split(";"))
    )
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    # The policy fits the page: no inline script, style or handler, and every file is its own.
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text) and "<style" not in page.text
    assert not re.search(r"\s(on[a-z]+|style)=", page.text)
    assert set(re.findall(r'(?:src|href)="(/[^"]*)"', page.text)) <= {
        "/dashboard/static/dashboard.css",
        "/dashboard/static/vendor/chart.umd.min.js",
        "/dashboard/static/dashboard.js",
        "/dashboard/static/vendor/chart.js.LICENSE.md",
        "/openapi.json",
    }
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)
