"""``/sessions``: Session and Batch (docs/protocol.md §6); the state machine is in ``shared/sessions.py``."""

from __future__ import annotations

import time

import msgspec
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qiskit_runtime_server.api.auth import authenticate
from qiskit_runtime_server.api.body import decode_json, read_limited
from qiskit_runtime_server.api.faults import expire_session
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared.errors import InvalidRequest, SessionNotFound
from qiskit_runtime_server.shared.sessions import (
    MODES,
    SessionCreate,
    SessionPatch,
    SessionRecord,
    new_session_id,
    session_view,
)

_decode_create = msgspec.json.Decoder(SessionCreate).decode
_decode_patch = msgspec.json.Decoder(SessionPatch).decode


async def _load(request: Request) -> SessionRecord:
    """The path's session, refreshed (expired sessions close), visible only to its instance.

    Raises:
        SessionNotFound: unknown, or another instance's session (404).
    """
    principal = authenticate(request)
    session_id = request.path_params["session_id"]
    found = await app_state(request)["sessions"].refresh(session_id)
    if found is None or found[0].instance != principal.instance:
        raise SessionNotFound(session_id)
    return (await expire_session(request, found))[0]


async def create_session(request: Request) -> Response:
    """``POST /sessions`` ``{"mode", "backend", "max_ttl"?}``: a new ``open`` session.

    Raises:
        InvalidRequest: unknown mode, missing backend or ``max_ttl`` out of range (400).
        BackendNotFound: unknown backend (404).
    """
    principal = authenticate(request)
    settings = app_state(request)["settings"]
    body = decode_json(_decode_create, await read_limited(request, settings.max_small_body_bytes), "session request")
    if body.mode not in MODES:
        raise InvalidRequest(f"mode must be one of {sorted(MODES)}, got {body.mode!r}.")
    if not body.backend:
        raise InvalidRequest("A backend is required: set the 'backend' field.")
    app_state(request)["catalog"].get(body.backend)
    max_ttl = body.max_ttl if body.max_ttl is not None else settings.session_max_ttl
    if not 1 <= max_ttl <= settings.session_max_ttl:
        raise InvalidRequest(f"max_ttl must be between 1 and {settings.session_max_ttl} seconds.")
    record = SessionRecord(
        id=new_session_id(),
        instance=principal.instance,
        backend=body.backend,
        mode=body.mode,
        max_ttl=max_ttl,
        interactive_ttl=settings.session_interactive_ttl,
        created=time.time(),
        user=principal.user,
    )
    sessions = app_state(request)["sessions"]
    await sessions.create(record)
    found = await sessions.refresh(record.id)
    assert found is not None
    # Retention housekeeping (at most once a minute) after the answer is sent, not before.
    view = session_view(found[0], found[1], time.time())
    return MsgspecResponse(view, background=BackgroundTask(sessions.housekeeping))


async def get_session(request: Request) -> Response:
    """``GET /sessions/{id}``: IBM's session object, with its derived ``state``."""
    record = await _load(request)
    found = await app_state(request)["sessions"].refresh(record.id)
    if found is None:
        raise SessionNotFound(record.id)
    return MsgspecResponse(session_view(found[0], found[1], time.time()))


async def update_session(request: Request) -> Response:
    """``PATCH /sessions/{id}`` ``{"accepting_jobs": false}`` (``Session.close()``): 204.

    The session closes once its queued and running jobs are done. The change is a
    compare-and-set on the stored record: a session closed meanwhile stays closed.
    """
    record = await _load(request)
    limit = app_state(request)["settings"].max_small_body_bytes
    patch = decode_json(_decode_patch, await read_limited(request, limit), "session update")
    await app_state(request)["sessions"].set_accepting(record, patch.accepting_jobs)
    return Response(status_code=204)


async def close_session(request: Request) -> Response:
    """``DELETE /sessions/{id}/close`` (``Session.cancel()``): close now, cancel queued jobs (204)."""
    record = await _load(request)
    await app_state(request)["sessions"].close(record, reason="The session was cancelled.")
    return Response(status_code=204)


routes = [
    Route("/sessions", create_session, methods=["POST"]),
    Route("/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/sessions/{session_id}", update_session, methods=["PATCH"]),
    Route("/sessions/{session_id}/close", close_session, methods=["DELETE"]),
]
