"""``/dashboard/ws``: job state changes pushed over WebSocket, from the ``qrs:job-events`` pub/sub channel.

One Redis subscription per API process (``LiveHub``) fans every event out to the open
connections whose viewer may see the job's instance; nothing of another instance is ever put
on a connection. Each connection has a bounded buffer (``BUFFER`` messages): a client that
does not read fast enough to keep it from filling is closed with code 1013 ("try again later")
instead of letting the API's memory grow; the page then reconnects and reloads its views.

Protocol (JSON text frames). The client's first message is ``{"key": "<API key>"}`` (``{}`` in
open mode): browsers cannot set headers on a WebSocket, and a key in the URL would land in
logs. The server answers ``{"type": "hello", "operator": bool}`` and then one
``{"type": "job", "job": {id, instance, backend, program, status, created, running, finished,
worker, reason, session_id}}`` per state change (times are UNIX seconds). An unknown key is
closed with code 4401 after ``{"type": "error"}``.

A handshake from a foreign page (an ``Origin`` that is not one of this server's own,
``api/origins.py``) is refused before it is accepted: the browser sees the connection fail
(HTTP 403) and receives nothing. Browsers apply no CORS rules to WebSockets, so without this
check any web page could follow the job events of an open-mode server on ``localhost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from redis.asyncio import Redis
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from qiskit_runtime_server.api.dashboard.viewer import Viewer, viewer_for_key
from qiskit_runtime_server.api.origins import origin_allowed
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.channel import ChannelListener
from qiskit_runtime_server.shared.errors import ApiError

logger = logging.getLogger("qrs.api")

# Messages buffered per connection before it is dropped as too slow.
BUFFER = 256
# Seconds a new connection has to send its key.
HELLO_TIMEOUT = 10.0

_encode = msgspec.json.Encoder().encode


class _Event(msgspec.Struct):
    instance: str


_decode_event = msgspec.json.Decoder(_Event).decode


class _Connection:
    __slots__ = ("dropped", "queue", "viewer")

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(BUFFER)
        self.dropped = asyncio.Event()


class LiveHub:
    """The API process's fan-out of ``qrs:job-events`` to its WebSocket connections."""

    def __init__(self, redis: Redis) -> None:
        self._connections: set[_Connection] = set()
        self._listener = ChannelListener(redis, keys.JOB_EVENTS_CHANNEL, self._event)
        self.dropped = 0

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    @property
    def connections(self) -> int:
        return len(self._connections)

    def _event(self, text: str) -> None:
        try:
            instance = _decode_event(text).instance
        except msgspec.DecodeError:
            return
        frame = b'{"type":"job","job":' + text.encode() + b"}"
        for conn in self._connections:
            if not conn.viewer.sees(instance) or conn.dropped.is_set():
                continue
            try:
                conn.queue.put_nowait(frame)
            except asyncio.QueueFull:
                conn.dropped.set()  # a slow consumer: closed by its own task
                self.dropped += 1

    async def serve(self, websocket: WebSocket) -> None:
        """Run one connection until the client leaves or falls behind."""
        if not origin_allowed(websocket.headers, app_state(websocket)["settings"]):
            logger.warning("refused a dashboard WebSocket from origin %.100r", websocket.headers.get("origin"))
            await websocket.close(code=1008)  # before accept: the server answers the handshake 403
            return
        await websocket.accept()
        try:
            hello = await asyncio.wait_for(websocket.receive_json(), HELLO_TIMEOUT)
            key = hello.get("key") if isinstance(hello, dict) else None
            viewer = viewer_for_key(websocket, key if isinstance(key, str) else None)
        except (TimeoutError, ValueError, WebSocketDisconnect, KeyError):
            with contextlib.suppress(Exception):
                await websocket.close(code=1008)
            return
        except ApiError as exc:
            with contextlib.suppress(Exception):
                await websocket.send_text(_encode({"type": "error", "message": exc.message}).decode())
                await websocket.close(code=4401)
            return
        conn = _Connection(viewer)
        self._connections.add(conn)
        try:
            await websocket.send_text(_encode({"type": "hello", "operator": viewer.operator}).decode())
            receiver = asyncio.create_task(self._drain(websocket))
            try:
                while not receiver.done():
                    getter = asyncio.create_task(conn.queue.get())
                    dropped = asyncio.create_task(conn.dropped.wait())
                    done, _ = await asyncio.wait({getter, dropped, receiver}, return_when=asyncio.FIRST_COMPLETED)
                    for task in (getter, dropped):
                        if task not in done:
                            task.cancel()
                    if getter in done:
                        await websocket.send_text(getter.result().decode())
                    if dropped in done:
                        await websocket.close(code=1013, reason="too slow: buffer full")
                        break
            finally:
                receiver.cancel()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self._connections.discard(conn)

    @staticmethod
    async def _drain(websocket: WebSocket) -> None:
        """Read (and ignore) what the client sends, to notice it leaving."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return


async def live_endpoint(websocket: WebSocket) -> None:
    """``WS /dashboard/ws`` (see the module docstring)."""
    await app_state(websocket)["live"].serve(websocket)


routes = [WebSocketRoute("/dashboard/ws", live_endpoint)]
