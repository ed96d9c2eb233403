"""Fault injection in the API (docs/faults.md; the rules are in ``shared/faults.py``).

``GET /admin/faults``             the rules, each with ``remaining`` and ``fired``
``POST /admin/faults``            add one rule (the body); answers it with its ``id``
``DELETE /admin/faults``          remove every rule; ``{"removed": n}``
``DELETE /admin/faults/{id}``     remove one rule (204; 404 if unknown)

Who may call them, as for ``/admin/reset``:

* listing: an operator, like ``/workers``: anyone in open mode, an admin key
  (``QRS_ADMIN_KEYS``) with access control on (401 without credentials, 403 for another key).
* adding and removing change what every client sees, so ``QRS_ALLOW_FAULTS`` must allow them
  (403 otherwise): ``false`` (the default) never; ``true`` with an admin key when access control
  is on, and in open mode only while the server listens on a loopback address; ``force`` in open
  mode on any address too.

The Host allow-list and the ``Origin`` check (``api/origins.py``) come first, so a web page
cannot reach them from a browser.

:class:`FaultMiddleware` applies ``http_error`` and ``latency`` rules to every other route; the
backend status, ``GET /backends`` and session hooks are called by their routes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from qiskit_runtime_server.api.admin_access import require_admin_route, require_operator
from qiskit_runtime_server.api.body import read_limited
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import AppState, app_state
from qiskit_runtime_server.shared import faults
from qiskit_runtime_server.shared.errors import MORE_INFO, InvalidRequest, NotFound
from qiskit_runtime_server.shared.sessions import SessionActivity, SessionRecord, state_of
from qiskit_runtime_server.shared.settings import Settings

logger = logging.getLogger("qrs.faults")

ADMIN_PATH = "/admin/faults"
_BACKEND_PATH = re.compile(r"^/api/v1/backends/([^/]+)")


def _require_changes(request: Request) -> None:
    mode = faults.allow_mode(app_state(request)["settings"])
    require_admin_route(request, mode, "QRS_ALLOW_FAULTS", "docs/faults.md")


def _store(request: Request) -> faults.FaultStore:
    return faults.FaultStore(app_state(request)["pool"])


async def list_faults(request: Request) -> Response:
    """``GET /admin/faults``: ``{"faults": [...]}``, oldest first."""
    require_operator(request)
    return MsgspecResponse({"faults": await _store(request).listing()})


async def add_fault(request: Request) -> Response:
    """``POST /admin/faults`` with one rule: 201 with the rule as stored.

    Raises:
        InvalidRequest: a malformed or invalid rule (400, naming the field).
    """
    _require_changes(request)
    body = await read_limited(request, app_state(request)["settings"].max_small_body_bytes)
    try:
        rule = faults.parse_rule(body)
    except faults.InvalidRule as exc:
        raise InvalidRequest(str(exc)) from None
    stored = await _store(request).add(rule)
    logger.warning("fault rule added: %s", stored)
    return MsgspecResponse(stored, status_code=201)


async def clear_faults(request: Request) -> Response:
    """``DELETE /admin/faults``: remove every rule."""
    _require_changes(request)
    return MsgspecResponse({"removed": await _store(request).clear()})


async def remove_fault(request: Request) -> Response:
    """``DELETE /admin/faults/{fault_id}``: 204, or 404 for an unknown id."""
    _require_changes(request)
    fault_id = request.path_params["fault_id"]
    if not await _store(request).remove(fault_id):
        raise NotFound(f"Fault rule {fault_id} not found.")
    return Response(status_code=204)


routes = [
    Route(ADMIN_PATH, list_faults, methods=["GET"]),
    Route(ADMIN_PATH, add_fault, methods=["POST"]),
    Route(ADMIN_PATH, clear_faults, methods=["DELETE"]),
    Route(ADMIN_PATH + "/{fault_id}", remove_fault, methods=["DELETE"]),
]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def error_body(rule: faults.FaultRule) -> tuple[int, dict[str, object], dict[str, str]]:
    """Status, IBM-format body and headers of an ``http_error`` rule's answer."""
    assert rule.status_code is not None
    code, default = faults.HTTP_ERRORS[rule.status_code]
    body: dict[str, object] = {
        "errors": [{"code": code, "message": rule.message or default, "more_info": MORE_INFO}],
        "trace": uuid.uuid4().hex,
    }
    headers = {} if rule.retry_after is None else {"Retry-After": str(rule.retry_after)}
    return rule.status_code, body, headers


class FaultMiddleware:
    """Applies ``latency`` and ``http_error`` rules to HTTP requests (not to ``/admin/faults``).

    Runs inside ``PrefixMiddleware``, so routes are matched on the path as routed (``/api/v1/...``
    whatever prefix the client used). Every matching latency rule that fires adds its delay; then
    the first matching http_error rule that fires answers instead of the route. Off (no Redis
    command at all) unless fault injection is on for this process (``shared/faults.py:enabled``);
    a Redis error while reading the rules lets the request through untouched.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.on = faults.enabled(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.on or scope["type"] != "http" or scope["path"].startswith(ADMIN_PATH):
            await self.app(scope, receive, send)
            return
        state = scope.get("state") or {}
        pool = state.get("pool")
        answer: faults.FaultRule | None = None
        if pool is not None:
            try:
                answer = await self._apply(faults.FaultStore(pool), scope)
            except RedisError as exc:
                logger.warning("fault rules not read (%s): request let through", exc)
        if answer is None:
            await self.app(scope, receive, send)
            return
        status, body, headers = error_body(answer)
        await MsgspecResponse(body, status_code=status, headers=headers)(scope, receive, send)

    async def _apply(self, store: faults.FaultStore, scope: Scope) -> faults.FaultRule | None:
        rules = await store.snapshot(faults.HTTP_EFFECTS)
        if not rules.rules:
            return None
        path: str = scope["path"]
        found = _BACKEND_PATH.match(path)
        event = {
            "route": path,
            "method": scope["method"],
            "instance": _header(scope, b"service-crn") or self.settings.instance,
            "backend": found.group(1) if found else None,
        }
        delay = 0
        for rule in rules.live(faults.LATENCY, event):
            if await store.fire(rule):
                delay += rule.latency_ms or 0
        if delay:
            await asyncio.sleep(delay / 1000)
        return await store.first_firing(rules.live(faults.HTTP_ERROR, event))


def _on(state: AppState) -> bool:
    return faults.enabled(state["settings"])


async def backend_status_fault(request: Request, name: str, instance: str) -> faults.FaultRule | None:
    """The ``backend_status`` rule that fires for this status read, if any."""
    state = app_state(request)
    if not _on(state):
        return None
    store = faults.FaultStore(state["pool"])
    rules = await store.snapshot({faults.BACKEND_STATUS})
    return await store.first_firing(rules.live(faults.BACKEND_STATUS, {"backend": name, "instance": instance}))


async def offline_backends(request: Request, names: list[str], instance: str) -> dict[str, faults.FaultRule]:
    """Backends of ``GET /backends`` that a live ``backend_status`` rule takes offline.

    The listing shows the rules' state without drawing them or taking their count (the client
    caches it at start-up and ``least_busy`` picks from it); only status reads fire them.
    """
    state = app_state(request)
    if not _on(state):
        return {}
    rules = await faults.FaultStore(state["pool"]).snapshot({faults.BACKEND_STATUS})
    out: dict[str, faults.FaultRule] = {}
    for name in names:
        live = rules.live(faults.BACKEND_STATUS, {"backend": name, "instance": instance})
        if live and live[0].probability > 0:
            out[name] = live[0]
    return out


async def expire_session(
    request: Request, found: tuple[SessionRecord, SessionActivity]
) -> tuple[SessionRecord, SessionActivity]:
    """``found`` after a ``session_expiry`` rule had its say: closed now if one fired.

    Called by every read of a session and by a job submitted to it; a session already closed
    draws nothing.
    """
    state = app_state(request)
    record, act = found
    if not _on(state) or state_of(record, act, time.time()) == "closed":
        return found
    store = faults.FaultStore(state["pool"])
    rules = await store.snapshot({faults.SESSION_EXPIRY})
    event = {"backend": record.backend, "instance": record.instance, "session": record.id}
    if await store.first_firing(rules.live(faults.SESSION_EXPIRY, event)) is None:
        return found
    closed = await state["sessions"].close(record, reason="The session expired.")
    refreshed = await state["sessions"].refresh(closed.id)
    return refreshed or (closed, act)
