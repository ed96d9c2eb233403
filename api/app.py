"""``create_app``: the Starlette application, its lifespan state and error handling.

Request path::

    (clients 0.40-0.48: ─HTTPS CONNECT─> api/proxy/tunnel.py, TLS ends there ─HTTP─> the same port)
    client ─HTTP─> uvicorn with api/server.py's protocol (deadlines, head size, IBM-format parse errors)
                   -> HostCheckMiddleware (Host allow-list, foreign Origin refused: api/origins.py)
                   -> PrefixMiddleware (catalog by Host, ".../api/v1" -> "/api/v1", no trailing slash, query length)
                   -> FaultMiddleware (injected latency and HTTP errors, only when fault injection is on)
                   -> Router: /identity/token, /search/..., /catalog/..., /openapi.json,
                      /api/v1/{backends,jobs,sessions,instances}, /dashboard (page, /dashboard/api, WS /dashboard/ws)
                   -> handler (api/routes/*.py; bodies through api/body.py) -> JobStore (Redis) -> arq queue
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Callable

import msgspec
from arq.connections import ArqRedis, create_pool
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from qiskit_runtime_server.api import auth
from qiskit_runtime_server.api import faults as fault_routes
from qiskit_runtime_server.api.access import load_policy
from qiskit_runtime_server.api.dashboard import live, page
from qiskit_runtime_server.api.dashboard import routes as dashboard
from qiskit_runtime_server.api.finished import FinishedJobs
from qiskit_runtime_server.api.openapi import openapi_document
from qiskit_runtime_server.api.origins import HostCheckMiddleware
from qiskit_runtime_server.api.proxy.hosts import local_path
from qiskit_runtime_server.api.responses import MsgspecResponse, RawJSONResponse, error_response
from qiskit_runtime_server.api.routes import backends, instances, job_actions, jobs, ops, reset, sessions
from qiskit_runtime_server.api.state import AppState
from qiskit_runtime_server.shared import faults, keys
from qiskit_runtime_server.shared.backends import BackendCatalog
from qiskit_runtime_server.shared.errors import MORE_INFO, ApiError, UriTooLong
from qiskit_runtime_server.shared.queue import connect, redis_settings
from qiskit_runtime_server.shared.sessions import SessionStore
from qiskit_runtime_server.shared.settings import Settings, load_settings
from qiskit_runtime_server.shared.store import JobStore

logger = logging.getLogger("qrs.api")

API_PREFIX = "/api/v1"


class PrefixMiddleware:
    """Serves the runtime API under any path prefix that ends in ``/api/v1``, with or without a
    trailing slash, and refuses oversize query strings.

    The client keeps a ``QISKIT_IBM_URL`` verbatim only when it contains ``experimental``
    (docs/protocol.md §1.1), so ``/experimental/api/v1/jobs`` must reach the same handler as
    ``/api/v1/jobs``. A trailing slash is dropped here instead of being redirected: Starlette's
    redirect builds its ``Location`` from the ``Host`` header and the rewritten path, so it
    pointed at whatever host the caller named and lost the prefix.

    Requests that came through proxy mode keep IBM's ``Host``; Global Catalog's ``/api/v1/{id}``
    is moved to ``/catalog/{id}`` first (:func:`~qiskit_runtime_server.api.proxy.hosts.local_path`).

    A query string over ``max_query_bytes`` is answered 414 in IBM's format; the HTTP server's
    own limit on the request line (``QRS_MAX_HEADER_BYTES``) is higher, so this answer comes first.
    """

    def __init__(self, app: ASGIApp, max_query_bytes: int) -> None:
        self.app = app
        self.max_query_bytes = max_query_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if len(scope.get("query_string", b"")) > self.max_query_bytes:
                error = UriTooLong(f"The query string exceeds the limit of {self.max_query_bytes} bytes.")
                await error_response(error)(scope, receive, send)
                return
            path: str = scope["path"]
            if proxied_host := _host(scope):
                path = local_path(proxied_host, path)
            cut = path.find(API_PREFIX + "/")
            stripped = path.rstrip("/") or "/"
            if cut > 0 or stripped != path:
                path = stripped[cut:] if cut > 0 else stripped
            if path != scope["path"]:
                scope = dict(scope, path=path, root_path=scope.get("root_path", ""))
        await self.app(scope, receive, send)


def _host(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1"))
    return ""


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    body = {
        "errors": [{"code": code, "message": str(exc.detail), "more_info": MORE_INFO}],
        "trace": uuid.uuid4().hex,
    }
    return MsgspecResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    trace = uuid.uuid4().hex
    logger.exception("unhandled error, trace %s", trace, exc_info=exc)
    body = {
        "errors": [{"code": "internal_error", "message": "Internal server error.", "more_info": MORE_INFO}],
        "trace": trace,
    }
    return MsgspecResponse(body, status_code=500)


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    """Redis unreachable past ``QRS_REDIS_DEADLINE``: 503 ``service_unavailable`` in IBM's format.

    The client retries a 503 (docs/protocol.md §8: 5 times, ~15 s of back-off), which rides out
    a short outage; other Redis errors (a script or type error) are server faults: 500.
    """
    if not isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return await _server_error(request, exc)
    trace = uuid.uuid4().hex
    logger.warning("Redis unreachable (%s: %s), trace %s: answered 503", type(exc).__name__, exc, trace)
    message = "The job store is unreachable; retry shortly."
    body = {"errors": [{"code": "service_unavailable", "message": message, "more_info": MORE_INFO}], "trace": trace}
    return MsgspecResponse(body, status_code=503, headers={"Retry-After": "1"})


async def connect_with_deadline(redis_url: str, deadline: float) -> ArqRedis:
    """A pool whose commands give up after about ``deadline`` seconds of an unreachable Redis.

    The shared pools retry a command for ~30 s (``shared/queue.py``), right for workers but
    not for a request the client is waiting on: here a command waits at most a third of the
    deadline for a reply (``socket_timeout``), a reconnect a quarter, and it is tried twice, so
    it raises ``redis.exceptions.ConnectionError``/``TimeoutError`` within ~0.9 x ``deadline``
    (answered 503 by ``_redis_unavailable``). Connections made later pick the bounds up too,
    so the API recovers by itself when Redis is back. Start-up still waits ~30 s for Redis.
    """
    settings = redis_settings(redis_url)
    settings.retry = Retry(ExponentialBackoff(cap=0.1, base=0.05), 1)
    probe = await create_pool(settings, retry=3)  # waits for Redis at start-up
    source = probe.connection_pool
    bounds = {"socket_timeout": max(0.1, deadline / 3), "socket_connect_timeout": max(0.1, deadline / 4)}
    kwargs = {**source.connection_kwargs, **bounds}
    pool = ArqRedis(connection_pool=ConnectionPool(connection_class=source.connection_class, **kwargs))
    await probe.aclose()
    return pool


async def shared_jwt_secret(settings: Settings, pool: ArqRedis) -> str:
    """The configured secret, or one random secret stored once in Redis for every API process."""
    if settings.jwt_secret:
        return settings.jwt_secret
    await pool.set(keys.JWT_SECRET, secrets.token_hex(32), nx=True)
    value = await pool.get(keys.JWT_SECRET)
    return value.decode() if isinstance(value, bytes) else str(value)


async def health(request: Request) -> Response:
    """``GET /health``: the process is up."""
    return MsgspecResponse({"status": "ok"})


def _version() -> str:
    try:
        return importlib.metadata.version("qiskit-runtime-server")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def create_app(
    settings: Settings | None = None,
    pool: ArqRedis | None = None,
    *,
    background: Callable[[ArqRedis], contextlib.AbstractAsyncContextManager[None]] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> Starlette:
    """The API application.

    Args:
        settings: configuration; read from the environment when omitted.
        pool: an existing Redis pool (the embedded server shares one with its worker); when
            omitted the lifespan connects to ``settings.redis_url`` and closes it at shutdown.
        background: entered for the app's lifetime with the pool (the embedded worker).
        on_ready: called once start-up is complete (prints the client recipe).
    """
    settings = settings or load_settings()
    catalog = BackendCatalog(aliases=settings.backend_aliases)
    access = load_policy(settings)
    timing = settings.timing_policy()  # one queue-time sequence per API process (QRS_TIMING_SEED)
    reset.reset_mode(settings)  # a wrong QRS_ALLOW_RESET fails here, at start-up
    # A wrong QRS_ALLOW_FAULTS or an invalid configured rule fails here, at start-up.
    faults.allow_mode(settings)
    configured_faults = faults.configured_rules(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        own_pool = pool is None
        redis = pool if pool is not None else await connect(settings.redis_url)
        # The subscription of FinishedJobs blocks on reads for as long as no job finishes, so
        # only request commands get the deadline: a separate pool when the API owns its pools.
        commands = redis
        if own_pool and settings.redis_url is not None:
            commands = await connect_with_deadline(settings.redis_url, settings.redis_deadline)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if commands is not redis:
                    stack.push_async_callback(commands.aclose)
                if background is not None:
                    await stack.enter_async_context(background(redis))
                finished = FinishedJobs(redis)
                await finished.start()
                stack.push_async_callback(finished.stop)
                hub = live.LiveHub(redis)
                await hub.start()
                stack.push_async_callback(hub.stop)
                store = JobStore(commands, settings.job_retention)
                await faults.install_configured(faults.FaultStore(commands), configured_faults)
                state: AppState = {
                    "settings": settings,
                    "pool": commands,
                    "store": store,
                    "catalog": catalog,
                    "jwt_secret": await shared_jwt_secret(settings, commands),
                    "finished": finished,
                    "access": access,
                    "sessions": SessionStore(commands, store),
                    "live": hub,
                    "timing": timing,
                }
                if on_ready is not None:
                    on_ready()
                yield state
        finally:
            if own_pool:
                await redis.aclose()

    async def openapi(request: Request) -> Response:
        """``GET /openapi.json``: the OpenAPI document of every route (api/openapi.py)."""
        return RawJSONResponse(document)

    runtime_routes = backends.routes + jobs.routes + job_actions.routes + sessions.routes + instances.routes
    routes = [
        Route("/health", health),
        Route("/openapi.json", openapi),
        *ops.routes,
        *reset.routes,
        *fault_routes.routes,
        Route("/identity/token", auth.issue_token, methods=["POST"]),
        Route("/search/v3/resources/search", auth.search_resources, methods=["POST"]),
        Route("/v3/resources/search", auth.search_resources, methods=["POST"]),
        Route("/catalog/{plan_id}", auth.catalog_plan),
        Mount(API_PREFIX, routes=runtime_routes),
        # The operator's dashboard (api/dashboard): page, static files, analytics API, live feed.
        *page.routes,
        Mount("/dashboard/api", routes=dashboard.routes),
        *live.routes,
    ]
    # The document describes every route, its own included, so it is encoded once they exist.
    document = msgspec.json.encode(openapi_document(routes, _version()))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            RedisError: _redis_unavailable,
            Exception: _server_error,
        },
    )
    # Never redirect (see PrefixMiddleware); the mounted API has its own router.
    app.router.redirect_slashes = False
    for route in routes:
        if isinstance(route, Mount):
            route.app.redirect_slashes = False  # type: ignore[attr-defined]
    # Inside PrefixMiddleware: fault rules match the path as routed (api/faults.py).
    app.add_middleware(fault_routes.FaultMiddleware, settings=settings)
    app.add_middleware(PrefixMiddleware, max_query_bytes=settings.max_query_bytes)
    # Added last, so it runs first: a request for a foreign Host is refused before anything else.
    app.add_middleware(HostCheckMiddleware, settings=settings)
    return app
