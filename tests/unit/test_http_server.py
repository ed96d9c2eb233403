"""The API on a real uvicorn with short timeouts, driven over raw sockets: idle and trickling
connections are closed, oversize request heads and unparseable requests get IBM-format errors."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.api.server import server_config
from qiskit_runtime_server.shared.settings import load_settings
from tests.conftest import free_port

LIMITS = {
    "QRS_KEEP_ALIVE": "1",
    "QRS_HEADER_TIMEOUT": "1",
    "QRS_BODY_TIMEOUT": "1",
    "QRS_MAX_HEADER_BYTES": "8192",
    "QRS_MAX_QUERY_BYTES": "4096",
    "QRS_STATUS_HOLD": "0",
}


@contextlib.contextmanager
def serving(environ: dict[str, str]) -> Iterator[int]:
    """A real uvicorn (the configuration of ``cli.py``) on fakeredis, in a thread; yields its port."""
    settings = load_settings(environ, host="127.0.0.1", port=free_port())
    server = uvicorn.Server(server_config(create_app(settings), settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield settings.port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serving(LIMITS) as port:
        yield port


# The server's limits are 1 s (LIMITS); a close within BOUND seconds shows that a limit cut the
# connection (without one it stays open), with room for a loaded machine. Each exchange gives
# up after WAIT seconds, so a failing case costs that long and a passing one about a second.
BOUND, WAIT = 10.0, 15.0


def exchange(port: int, *parts: bytes, pause: float = 0.0, wait: float = WAIT) -> tuple[bytes, bool, float]:
    """Send ``parts`` (``pause`` s apart), then read until the server closes or ``wait`` s pass.

    Returns what was read, whether the server closed the connection, and the seconds from the
    first send until the close (or until giving up).
    """
    sock = socket.create_connection(("127.0.0.1", port))
    started = time.monotonic()
    received = b""
    try:
        for part in parts:
            try:
                sock.sendall(part)
            except OSError:  # closed by the server mid-send
                return received, True, time.monotonic() - started
            time.sleep(pause)
        sock.settimeout(wait)
        while True:
            try:
                chunk = sock.recv(65_536)
            except TimeoutError:
                return received, False, time.monotonic() - started
            except ConnectionResetError:
                return received, True, time.monotonic() - started
            if not chunk:
                return received, True, time.monotonic() - started
            received += chunk
    finally:
        sock.close()


def ibm_error(response: bytes, status: int) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), response[:300]
    assert b"content-type: application/json" in head.lower()
    document = json.loads(body)
    assert set(document["errors"][0]) == {"code", "message", "more_info"} and document["trace"]
    return document


def test_fresh_connection_that_sends_nothing_is_closed(port: int) -> None:
    _, closed, after = exchange(port)
    assert closed and after < BOUND


def test_idle_keep_alive_connection_is_closed(port: int) -> None:
    response, closed, after = exchange(port, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200") and closed and after < BOUND


def test_trickled_headers_are_cut_off(port: int) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200
    _, closed, after = exchange(port, *[bytes([b]) for b in request], pause=0.1, wait=1)
    # 218 bytes at 0.1 s each would take 22 s; the head must be complete within 1 s.
    assert closed and after < BOUND


def test_trickled_body_gets_408_and_is_closed(port: int) -> None:
    head = b"POST /api/v1/jobs HTTP/1.1\r\nHost: localhost\r\nAuthorization: apikey k\r\nContent-Length: 1000\r\n\r\n"
    response, closed, after = exchange(port, head, b'{"program_id": ', pause=0.0)
    assert closed and after < BOUND
    assert ibm_error(response, 408)["errors"][0]["code"] == "request_timeout"  # type: ignore[index]


def test_unread_body_is_discarded_for_a_bounded_time(port: int) -> None:
    # No credentials: 401 before the body is read, while the client keeps trickling its 1 GB body.
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(2)
    try:
        sock.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000000\r\n\r\n")
        ibm_error(sock.recv(65_536), 401)
        answered = time.monotonic()
        closed = False
        while time.monotonic() - answered < WAIT:
            try:
                sock.sendall(b"x" * 100)
                time.sleep(0.1)
            except OSError:
                closed = True
                break
        assert closed and time.monotonic() - answered < BOUND
    finally:
        sock.close()


def test_oversize_body_over_a_real_socket_is_413(port: int) -> None:
    head = (
        b"POST /identity/token HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (16_384, b"a" * 16_384)
    response, _, _ = exchange(port, head, chunk, chunk, chunk)
    assert ibm_error(response, 413)["errors"][0]["code"] == "payload_too_large"  # type: ignore[index]


def test_long_query_strings_get_414_in_ibm_format(port: int) -> None:
    # Over QRS_MAX_QUERY_BYTES: answered by the application.
    request = b"GET /api/v1/jobs?tags=" + b"a" * 6000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
    response, _, _ = exchange(port, request)
    ibm_error(response, 414)
    # 100 KB, over the server's own limit on the request line: answered by the protocol.
    response, closed, _ = exchange(port, b"GET /health?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert ibm_error(response, 414)["errors"][0]["code"] == "uri_too_long"  # type: ignore[index]
    assert closed


def test_oversize_headers_get_431_in_ibm_format(port: int) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + b"X-Pad: " + b"a" * 200_000 + b"\r\n\r\n"
    response, closed, _ = exchange(port, request)
    ibm_error(response, 431)
    assert closed


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_unparseable_requests_get_400_in_ibm_format(port: int, request_bytes: bytes) -> None:
    response, _, _ = exchange(port, request_bytes)
    ibm_error(response, 400)


@pytest.mark.parametrize(
    "target",
    [
        b"/api/v1/jobs/%ff%fe",
        b"/api/v1/jobs/%",
        b"//api/v1/backends",
        b"http://evil.example/api/v1/jobs/x",
        b"*",
        b"/%00",
        b"/api/v1/jobs/x/../../../health",
        b"/api/v1/backends/fake_manila%2Fstatus",
        b"/api/v1/jobs?%zz=%",
    ],
)
def test_odd_urls_get_no_server_error(port: int, target: bytes) -> None:
    request = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nAuthorization: apikey k\r\nConnection: close\r\n\r\n"
    response, _, _ = exchange(port, request)
    status = int(response.split(b" ", 2)[1])
    assert status < 500, response[:300]
    if status >= 400:
        ibm_error(response, status)


def test_past_the_connection_limit_the_answer_is_503_in_ibm_format() -> None:
    with serving({**LIMITS, "QRS_MAX_CONNECTIONS": "2", "QRS_KEEP_ALIVE": "5"}) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            time.sleep(0.2)
            response, closed, _ = exchange(port, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert ibm_error(response, 503)["errors"][0]["code"] == "service_unavailable"  # type: ignore[index]
            assert closed
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        response, _, _ = exchange(port, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200 ")
