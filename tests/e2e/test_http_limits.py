"""The HTTP limits of both deployments as ``qiskit-runtime-server`` starts them (cli.py), over raw
sockets with the default settings: idle connections closed, oversize requests answered in IBM's
format, and the real client unaffected (the other e2e tests)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import Deployment

pytestmark = pytest.mark.e2e


def _connect(deployment: Deployment) -> socket.socket:
    address = urlsplit(deployment.base)
    return socket.create_connection((address.hostname, address.port))


def _answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    received = b""
    while chunk := sock.recv(65_536):
        received += chunk
    return received


def test_idle_connection_is_closed_after_the_keep_alive(deployment: Deployment) -> None:
    with _connect(deployment) as sock:
        started = time.monotonic()
        sock.settimeout(60)
        assert sock.recv(1) == b""  # closed by the server
        # QRS_KEEP_ALIVE, 5 s; the bound leaves room for a loaded machine (without it: never closed).
        assert time.monotonic() - started < 30


def test_oversize_request_line_and_body_get_ibm_errors(deployment: Deployment) -> None:
    with _connect(deployment) as sock:
        sock.sendall(b"GET /api/v1/jobs?tags=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, _, body = _answer(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 414 ") and json.loads(body)["errors"][0]["code"] == "uri_too_long"
    with _connect(deployment) as sock:
        sock.sendall(b"POST /identity/token HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n" + b"%x\r\n%s\r\n" % (65_536, b"a" * 65_536) + b"0\r\n\r\n")
        head, _, body = _answer(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ") and json.loads(body)["errors"][0]["code"] == "payload_too_large"
