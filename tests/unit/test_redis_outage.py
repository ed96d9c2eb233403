"""The API while Redis does not answer: 503 ``service_unavailable`` in IBM's format within
``QRS_REDIS_DEADLINE``, and 200 again by itself once Redis answers (``api/app.py``).

Redis "goes away" behind a relay that stops forwarding (a partition: connections stay open,
nothing comes back), which is what a cut network link looks like to the API; without the
deadline a request waited ~30 s of command retries and then answered 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest

from tests.conftest import free_port
from tests.unit.conftest import in_process_api

pytestmark = pytest.mark.redis

DEADLINE = 1.0


@contextlib.asynccontextmanager
async def partitionable(redis_url: str) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A relay to ``redis_url``; clearing the event stops it forwarding (setting resumes)."""
    target = urlparse(redis_url)
    link = asyncio.Event()
    link.set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await link.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield f"redis://127.0.0.1:{port}{target.path or '/0'}", link
    finally:
        link.set()
        server.close()


async def test_a_partitioned_redis_answers_503_within_the_deadline_and_recovers(real_redis_url: str) -> None:
    async with partitionable(real_redis_url) as (url, link):
        environ = {"REDIS_URL": url, "QRS_REDIS_DEADLINE": str(DEADLINE)}
        async with in_process_api(environ) as http:
            assert (await http.get("/api/v1/jobs?limit=1")).status_code == 200
            link.clear()
            started = time.monotonic()
            answer = await http.get("/api/v1/jobs?limit=1")
            took = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            error = answer.json()["errors"][0]
            assert error["code"] == "service_unavailable" and answer.json()["trace"]
            # Without the deadline the pool's retries would take ~30 s; timers fire late on a loaded machine.
            assert took < DEADLINE + 3, f"503 after {took:.2f} s"
            link.set()
            assert (await http.get("/api/v1/jobs?limit=1")).status_code == 200
