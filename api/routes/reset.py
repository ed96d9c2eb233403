"""Clean state and snapshots for tests and CI (docs/testing.md).

``POST /admin/reset``   empty the store: jobs, sessions, usage, the dashboard's counters
                        (``shared/snapshot.py`` says what is kept); ``{"jobs": n, "keys": n}``
``GET /admin/export``   the store as JSON lines (``application/x-ndjson``)
``POST /admin/import``  load an export (the body); ``{"jobs", "sessions", "usage", "skipped"}``

Who may call them:

* ``export``: an operator, like ``/workers``: anyone in open mode, an admin key
  (``QRS_ADMIN_KEYS``) with access control on (401 without credentials, 403 for another key).
* ``reset`` and ``import`` change everyone's data, so ``QRS_ALLOW_RESET`` must allow them
  (403 otherwise): ``false`` (the default) never; ``true`` with an admin key when access
  control is on, and in open mode only while the server listens on a loopback address (a
  server reachable from the network in open mode would let anyone wipe it); ``force`` in open
  mode on any address too.

Browsers cannot reach them from another site: the Host allow-list and the ``Origin`` check
(``api/origins.py``) come first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from qiskit_runtime_server.api.admin_access import admin_mode, require_admin_route, require_operator
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared import snapshot
from qiskit_runtime_server.shared.errors import InvalidRequest
from qiskit_runtime_server.shared.settings import Settings

# The longest line an import accepts: a job's params and result are bounded by QRS_MAX_PARAMS_BYTES.
_LINE_FACTOR = 4


def reset_mode(settings: Settings) -> str:
    """``QRS_ALLOW_RESET`` lowercased: ``false``, ``true`` or ``force``.

    Raises:
        ValueError: any other value (start-up fails, naming the variable).
    """
    return admin_mode(settings.allow_reset, "QRS_ALLOW_RESET")


def _require_reset(request: Request) -> None:
    require_admin_route(request, reset_mode(app_state(request)["settings"]), "QRS_ALLOW_RESET", "docs/testing.md")


async def reset(request: Request) -> Response:
    """``POST /admin/reset``: empty the store; answers how many jobs and keys were deleted."""
    _require_reset(request)
    state = app_state(request)
    counts = await snapshot.reset(state["pool"], state["settings"].queue_name)
    return MsgspecResponse(counts)


async def export(request: Request) -> Response:
    """``GET /admin/export``: one JSON object per line (``shared/snapshot.py``)."""
    require_operator(request)
    return StreamingResponse(
        snapshot.export_lines(app_state(request)["pool"]),
        media_type="application/x-ndjson",
        headers={"content-disposition": 'attachment; filename="qiskit-runtime-server.jsonl"'},
    )


async def _lines(request: Request, limit: int) -> AsyncIterator[bytes]:
    buffer = b""
    async for chunk in request.stream():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line
        if len(buffer) > limit:
            raise InvalidRequest(f"An import line is longer than {limit} bytes.")
    if buffer:
        yield buffer


async def import_(request: Request) -> Response:
    """``POST /admin/import``: load the JSON lines of an export; 400 names the first bad line."""
    _require_reset(request)
    state = app_state(request)
    settings = state["settings"]
    try:
        report = await snapshot.import_lines(
            state["pool"],
            _lines(request, _LINE_FACTOR * settings.max_params_bytes),
            queue_name=settings.queue_name,
            retention=settings.job_retention,
        )
    except snapshot.SnapshotError as exc:
        raise InvalidRequest(f"Import stopped: {exc}") from None
    return MsgspecResponse(report.as_dict())


routes = [
    Route("/admin/reset", reset, methods=["POST"]),
    Route("/admin/export", export, methods=["GET"]),
    Route("/admin/import", import_, methods=["POST"]),
]
