"""The ``CONNECT`` listener of proxy mode: TLS terminated here, requests handed to the local API.

Speaks the forward-proxy half of RFC 9110 §9.3.6 that ``requests``/urllib3 use for
``HTTPS_PROXY``: one ``CONNECT host:443`` per connection, answered ``200`` for the hosts in
:data:`~.hosts.PROXIED_HOSTS` and ``403`` for any other (nothing is ever forwarded to the
internet); any other method gets ``405``. After the ``200`` the connection is upgraded to
TLS with the proxy's leaf certificate and its plaintext is piped, unchanged, to this
server's own HTTP port, where the usual limits, authentication and routing apply (the
``Host`` header still names IBM's host, which is how the catalog's paths are told apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator

from qiskit_runtime_server.api.proxy.hosts import is_proxied

logger = logging.getLogger(__name__)

# A CONNECT head is one short line plus a few headers.
MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
CHUNK = 64 * 1024


class ConnectProxy:
    """An asyncio server on ``host:port`` that tunnels IBM's hosts to ``upstream`` (host, port).

    ``context`` is the TLS server context of :func:`~.ca.server_context`. :meth:`start`
    binds (raises ``OSError`` if the port is taken); :meth:`close` stops listening and
    drops the open tunnels.
    """

    def __init__(self, host: str, port: int, upstream: tuple[str, int], context: ssl.SSLContext) -> None:
        self.host, self.port, self.upstream, self.context = host, port, upstream, context
        self._server: asyncio.Server | None = None
        self._tunnels: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=MAX_HEAD_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tunnels):
            task.cancel()
        await asyncio.gather(*self._tunnels, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as exc:
            logger.debug("proxy connection ended: %r", exc)
        finally:
            self._tunnels.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            await _reply(writer, 431, "Request Header Fields Too Large")
            return
        target = _connect_target(head)
        if target is None:
            await _reply(writer, 405, "Method Not Allowed", "Proxy mode only tunnels CONNECT host:443.")
            return
        host, port = target
        if not is_proxied(host, port):
            logger.warning("proxy refused CONNECT %s:%s (not one of IBM's API hosts)", host, port)
            await _reply(writer, 403, "Forbidden", f"Proxy mode serves only IBM's API hosts, not {host}:{port}.")
            return
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        await writer.start_tls(self.context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()


def _connect_target(head: bytes) -> tuple[str, int] | None:
    """``(host, port)`` of a ``CONNECT host:port HTTP/1.x`` head, else None (also for bad ports).

    The port must be 1-5 ASCII digits: ``str.isdigit`` alone admits ``"²"`` (byte 0xB2 in
    Latin-1), which ``int`` refuses, and any number of digits.
    """
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or parts[0].upper() != "CONNECT" or not parts[2].startswith("HTTP/1."):
        return None
    host, sep, port = parts[1].rpartition(":")
    if not sep or not (port.isascii() and port.isdigit() and len(port) <= 5):
        return None
    return host.strip("[]"), int(port)


async def _reply(writer: asyncio.StreamWriter, status: int, phrase: str, text: str = "") -> None:
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe_both(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until either side closes, then end both directions."""
    tasks = [asyncio.create_task(_pipe(a_reader, b_writer)), asyncio.create_task(_pipe(b_reader, a_writer))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()


@contextlib.asynccontextmanager
async def running_proxy(proxy: ConnectProxy) -> AsyncIterator[ConnectProxy]:
    """Start ``proxy`` for the duration of the block."""
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
