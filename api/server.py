"""The uvicorn configuration of both server modes, and the HTTP protocol's own limits.

uvicorn (0.30+, httptools parser) closes idle keep-alive connections after ``timeout_keep_alive``
but, left alone, keeps a connection open forever when it never sends a byte, trickles its
headers, or trickles a body the application did not read; its parser accepts headers of any
size; and it answers a request it cannot parse with a plain-text 400. :class:`LimitedHttpProtocol`
closes those gaps on uvicorn's own httptools protocol:

* a fresh connection that sends nothing is closed after ``QRS_KEEP_ALIVE`` seconds (as an idle
  keep-alive one is);
* a request's headers must be complete ``QRS_HEADER_TIMEOUT`` seconds after its first byte,
  else the connection is closed;
* a request line plus headers over ``QRS_MAX_HEADER_BYTES`` is answered 431 (414 when the
  request line alone is over it) and closed;
* a body the application answered without reading is discarded for at most
  ``QRS_BODY_TIMEOUT`` seconds (so that the client can read the answer), then the connection is
  closed; a body the application reads is bounded by ``api/body.py``;
* past ``QRS_MAX_CONNECTIONS`` open connections or running requests, a request is answered
  503 ``service_unavailable`` (uvicorn's ``limit_concurrency`` check, with an IBM-format body;
  the client retries it) and the connection closed;
* every answer of the protocol itself is in IBM's error format.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from qiskit_runtime_server.shared.errors import MORE_INFO, ApiError, HeadersTooLarge, InvalidRequest, UriTooLong
from qiskit_runtime_server.shared.settings import Settings

_REASONS = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


async def _unavailable(scope: Any, receive: Any, send: Any) -> None:
    """The answer past ``QRS_MAX_CONNECTIONS``: uvicorn's 503, in IBM's format."""
    error = {"code": "service_unavailable", "message": "The server is at its connection limit.", "more_info": MORE_INFO}
    body = msgspec.json.encode({"errors": [error], "trace": uuid.uuid4().hex})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the protocol then answers ``error``."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size and time limits and IBM-format errors.

    The limits come from the :class:`Settings` given to :func:`server_config`, which sets them
    on a subclass (uvicorn builds one protocol object per connection from a class).
    """

    settings: Settings = Settings()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._awaiting_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refusal: ApiError | None = None

    # Connection events.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response: without this, a connection
        # that never sends a byte stays open for good.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.settings.header_timeout, self._close)
        super().data_received(data)

    # Parser callbacks.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_head = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url), url=True)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4, url=False)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        limit = self.settings.max_connections
        if limit and (len(self.connections) > limit or len(self.tasks) >= limit):
            # uvicorn's own limit_concurrency check (left off in the config) answers in plain text.
            app, self.app = self.app, _unavailable
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            # Answered before its body arrived (401, 404, 413...): the rest is discarded as it
            # comes, so the client can read the answer, but not for longer than a body may take.
            self._linger_timer = self.loop.call_later(self.settings.body_timeout, self._close)

    def on_message_complete(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().on_message_complete()

    # Answers of the protocol itself.

    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser refused in IBM's format (``msg`` is uvicorn's reason)."""
        error = self._refusal or InvalidRequest(msg)
        body = msgspec.json.encode(error.body(uuid.uuid4().hex))
        head = [b"HTTP/1.1 %d %s\r\n" % (error.status_code, _REASONS.get(error.status_code, b"Bad Request"))]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _count_head(self, size: int, *, url: bool) -> None:
        self._head_bytes += size
        limit = self.settings.max_header_bytes
        if self._head_bytes > limit and self._refusal is None:
            what = "request line" if url else "request line and headers"
            kind = UriTooLong if url else HeadersTooLarge
            self._refusal = kind(f"The {what} exceed the limit of {limit} bytes.")
            # httptools turns this into HttpParserError, which uvicorn answers with send_400_response.
            raise _Refused(self._refusal)

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The ``uvicorn.Config`` of ``app`` for the embedded server and the ``api`` subcommand.

    Binds ``settings.host``/``settings.port``; keep-alive ``QRS_KEEP_ALIVE`` s; connection
    cap, header and body limits and deadlines as :class:`LimitedHttpProtocol` describes.
    """
    protocol = type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"settings": settings})
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        timeout_keep_alive=settings.keep_alive,
        # Used only if someone selects h11; our protocol bounds the same with httptools.
        h11_max_incomplete_event_size=settings.max_header_bytes,
        log_level="warning",
        log_config=None,
    )
