"""The API in process: its lifespan entered by hand, its state copied into every request scope
the way uvicorn does (``httpx.ASGITransport`` runs no lifespan)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from arq.connections import ArqRedis

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.shared.settings import load_settings


@contextlib.asynccontextmanager
async def in_process_api(
    environ: dict[str, str] | None = None, pool: ArqRedis | None = None, *, api_key: str | None = "k"
) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on ``create_app`` (fakeredis unless ``pool`` is given).

    With ``api_key`` the client carries a bearer token from ``/identity/token``. The app's
    lifespan state is available as ``client.app_state``.
    """
    app = create_app(load_settings(environ or {}), pool)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope, receive, send):  # type: ignore[no-untyped-def]
            scope["state"] = dict(state)
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            http.app_state = state  # type: ignore[attr-defined]
            if api_key is not None:
                token = (await http.post("/identity/token", data={"apikey": api_key})).json()["access_token"]
                http.headers["Authorization"] = f"Bearer {token}"
            yield http


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The API on a fresh in-memory Redis, with a bearer token."""
    async with in_process_api() as http:
        yield http
