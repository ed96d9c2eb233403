"""The Host allow-list and the Origin check (``api/origins.py``): DNS rebinding and cross-origin
pages get nothing, the server's own names, the client and the proxy tunnel keep working."""

from __future__ import annotations

import pytest
import websockets.sync.client
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import InvalidStatus

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.api.origins import allowed_hosts, host_allowed, origin_allowed, split_host_header
from qiskit_runtime_server.api.proxy.hosts import PROXIED_HOSTS
from qiskit_runtime_server.shared.settings import load_settings
from tests.unit.conftest import in_process_api
from tests.unit.test_http_server import serving
from tests.unit.test_request_limits import assert_ibm_error

LOOPBACK = {"localhost", "127.0.0.1", "[::1]"}


def _allowed(**env: str) -> frozenset[str] | None:
    return allowed_hosts(load_settings(env))


def test_default_allow_list_is_loopback_plus_public_url_and_a_specific_bind() -> None:
    assert _allowed() == LOOPBACK
    assert _allowed(QRS_HOST="0.0.0.0") == LOOPBACK
    assert _allowed(QRS_HOST="::") == LOOPBACK
    assert _allowed(QRS_HOST="10.0.0.5") == LOOPBACK | {"10.0.0.5"}
    assert _allowed(QRS_HOST="fd00::5") == LOOPBACK | {"[fd00::5]"}
    assert _allowed(QRS_PUBLIC_URL="https://Qiskit.Example.org:8443/base") == LOOPBACK | {"qiskit.example.org"}


def test_explicit_allow_list_replaces_the_defaults_but_keeps_public_url_and_proxy_hosts() -> None:
    assert _allowed(QRS_ALLOWED_HOSTS="api, qrs.lan") == {"api", "qrs.lan"}
    assert _allowed(QRS_ALLOWED_HOSTS="api", QRS_PUBLIC_URL="http://qrs.example:9000") == {"api", "qrs.example"}
    assert _allowed(QRS_ALLOWED_HOSTS="localhost,*") is None
    with_proxy = _allowed(QRS_PROXY_PORT="8443")
    assert with_proxy is not None and with_proxy == LOOPBACK | set(PROXIED_HOSTS)
    assert not set(PROXIED_HOSTS) & set(_allowed() or ())


def test_host_matching() -> None:
    assert split_host_header("[::1]:8000") == ("[::1]", 8000)
    assert split_host_header("LocalHost.:8000") == ("localhost", 8000)
    assert split_host_header("example.org") == ("example.org", None)
    assert split_host_header("example.org:²") == ("example.org", None)
    allowed = frozenset({"localhost", "*.example.org"})
    assert host_allowed("a.example.org", allowed) and host_allowed("b.a.example.org", allowed)
    assert not host_allowed("example.org", allowed) and not host_allowed("evilexample.org", allowed)
    assert not host_allowed("localhost.evil.example", allowed)
    assert host_allowed("anything", None)


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "localhost", "LOCALHOST."])
async def test_loopback_hosts_are_served(host: str) -> None:
    async with in_process_api() as http:
        response = await http.get("/api/v1/backends", headers={"Host": host})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/api/v1/backends", "/dashboard", "/dashboard/api/overview", "/health", "/nowhere"])
async def test_dns_rebinding_host_is_400_in_ibm_format(path: str) -> None:
    """A page of attacker.example re-pointed at 127.0.0.1: its requests name attacker.example."""
    async with in_process_api() as http:
        response = await http.get(
            path, headers={"Host": "attacker.example:8000", "Origin": "http://attacker.example:8000"}
        )
    body = assert_ibm_error(response, 400, "bad_request")
    assert "QRS_ALLOWED_HOSTS" in body["errors"][0]["message"]  # type: ignore[index]


async def test_allowed_hosts_setting() -> None:
    async with in_process_api({"QRS_ALLOWED_HOSTS": "api,*.corp.example"}, api_key=None) as http:
        assert (await http.get("/health", headers={"Host": "api:8000"})).status_code == 200
        assert (await http.get("/health", headers={"Host": "qrs.corp.example"})).status_code == 200
        assert_ibm_error(await http.get("/health", headers={"Host": "localhost:8000"}), 400)
    async with in_process_api({"QRS_ALLOWED_HOSTS": "*"}, api_key=None) as http:
        assert (await http.get("/health", headers={"Host": "anything.example"})).status_code == 200


async def test_proxy_mode_serves_ibm_hosts() -> None:
    """Tunnelled requests keep IBM's Host: allowed in proxy mode (and only there)."""
    async with in_process_api({"QRS_PROXY_PORT": "8443"}, api_key=None) as http:
        token = await http.post("/identity/token", data={"apikey": "k"}, headers={"Host": "iam.cloud.ibm.com"})
        assert token.status_code == 200, token.text
        bearer = f"Bearer {token.json()['access_token']}"
        for host, path in [
            ("globalcatalog.cloud.ibm.com", "/api/v1/qiskit-runtime-server-plan"),
            ("us-east.quantum.cloud.ibm.com", "/api/v1/backends"),
            ("quantum.cloud.ibm.com", "/api/v1/backends"),
        ]:
            response = await http.get(path, headers={"Host": host, "Authorization": bearer})
            assert response.status_code == 200, (host, response.text)
    async with in_process_api(api_key=None) as http:
        refused = await http.post("/identity/token", data={"apikey": "k"}, headers={"Host": "iam.cloud.ibm.com"})
        assert_ibm_error(refused, 400)


def _origin_ok(origin: str | None, host: str = "localhost:8000", **env: str) -> bool:
    headers = {"host": host} if origin is None else {"host": host, "origin": origin}
    return origin_allowed(headers, load_settings(env))


def test_origin_rules() -> None:
    assert _origin_ok(None)  # not a browser
    assert (
        _origin_ok("http://localhost:8000") and _origin_ok("http://127.0.0.1:8000") and _origin_ok("http://[::1]:8000")
    )
    # The page was served under the request's own Host (a published port, a reverse proxy).
    assert _origin_ok("http://localhost:9000", host="localhost:9000")
    assert _origin_ok("https://qrs.example", host="qrs.example")
    assert _origin_ok("https://qrs.example", host="localhost:8000", QRS_PUBLIC_URL="https://qrs.example/")
    assert _origin_ok("http://10.0.0.5:8000", host="localhost:8000", QRS_HOST="10.0.0.5")
    # Another port, another scheme, another name: foreign.
    assert not _origin_ok("http://127.0.0.1:9999")
    assert not _origin_ok("http://localhost:9999")
    assert not _origin_ok("http://attacker.example")
    assert not _origin_ok("null") and not _origin_ok("") and not _origin_ok("http://localhost:99999")


async def test_foreign_origin_http_requests_are_403() -> None:
    """Browsers send simple cross-origin requests without asking; they are refused, unread or not."""
    async with in_process_api() as http:
        foreign = {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:9999"}
        assert_ibm_error(await http.post("/identity/token", data={"apikey": "k"}, headers=foreign), 403, "forbidden")
        assert_ibm_error(await http.get("/dashboard/api/jobs", headers=foreign), 403, "forbidden")
        own = {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}
        assert (await http.get("/dashboard/api/jobs", headers=own)).status_code == 200


URL = "ws://localhost:8000/dashboard/ws"


def _client() -> TestClient:
    return TestClient(create_app(load_settings({})), base_url="http://localhost:8000")


def test_dashboard_websocket_refuses_a_foreign_origin_before_accepting() -> None:
    with _client() as http:
        for origin in ("http://127.0.0.1:9999", "http://attacker.example", "null"):
            headers = {"origin": origin}
            with pytest.raises(WebSocketDisconnect) as closed, http.websocket_connect(URL, headers=headers) as ws:
                ws.receive_json()
            assert closed.value.code == 1008
        # A foreign Host (DNS rebinding) is refused by the Host check, Origin matching or not.
        rebound = {"host": "attacker.example:8000", "origin": "http://attacker.example:8000"}
        with (
            pytest.raises(WebSocketDisconnect),
            http.websocket_connect(URL, headers=rebound),
        ):
            pass
        # The page's own origin, and a non-browser client without Origin, get the feed.
        for headers in ({"origin": "http://localhost:8000"}, {}):
            with http.websocket_connect(URL, headers=headers) as ws:
                ws.send_json({})
                assert ws.receive_json()["type"] == "hello"


def test_real_server_answers_a_foreign_websocket_handshake_403() -> None:
    with serving({}) as port:
        url = f"ws://127.0.0.1:{port}/dashboard/ws"
        with pytest.raises(InvalidStatus) as refused:
            websockets.sync.client.connect(url, origin="http://127.0.0.1:1", open_timeout=5)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        with websockets.sync.client.connect(url, origin=f"http://127.0.0.1:{port}", open_timeout=5) as ws:  # type: ignore[arg-type]
            ws.send("{}")
            assert '"hello"' in str(ws.recv(timeout=5))
