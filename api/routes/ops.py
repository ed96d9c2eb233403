"""Operations endpoints.

``GET /health``  liveness: the API process answers (in ``api/app.py``).
``GET /ready``   readiness: Redis answers and at least one worker has a current heartbeat;
                 503 with the reasons otherwise (a load balancer stops sending jobs).
``GET /workers`` the worker registry: id, host, pid, device, pinned GPU, current job, last
                 heartbeat (UNIX seconds and ISO 8601), jobs done.
``GET /metrics`` Prometheus text format (``api/metrics.py``).

``/health`` and ``/ready`` are open (probes). ``/workers`` and ``/metrics`` are open in open
mode; with access control on they need an operator's key (``QRS_ADMIN_KEYS``, sent as
``Authorization: apikey <key>`` or a bearer token of it: 401 without credentials, 403 for
another key) unless ``QRS_OPEN_METRICS=true`` keeps them open for a Prometheus that scrapes
without credentials.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qiskit_runtime_server.api.dashboard.viewer import request_viewer
from qiskit_runtime_server.api.metrics import render_metrics
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared import workers
from qiskit_runtime_server.shared.errors import Forbidden
from qiskit_runtime_server.shared.models import iso

# Readiness must answer quickly even while Redis is down (connections retry for ~30 s).
READY_TIMEOUT = 2.0


async def ready(request: Request) -> Response:
    """``GET /ready``: 200 ``{"status": "ready", "workers": n}``, else 503 with ``reasons``."""
    reasons: list[str] = []
    live: list[workers.WorkerInfo] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await app_state(request)["pool"].ping()
            live = await workers.live_workers(app_state(request)["pool"])
    except (RedisError, OSError, TimeoutError) as exc:
        reasons.append(f"Redis is not reachable: {type(exc).__name__}")
    else:
        if not live:
            reasons.append("no live worker")
    body: dict[str, object] = {"status": "not ready" if reasons else "ready", "workers": len(live)}
    if reasons:
        body["reasons"] = reasons
    return MsgspecResponse(body, status_code=503 if reasons else 200)


def require_operator(request: Request) -> None:
    """Let the request through in open mode, with ``QRS_OPEN_METRICS``, or with an admin key.

    Raises:
        NotAuthorized: access control is on and the credentials are missing or invalid (401).
        Forbidden: a valid key that is not in ``QRS_ADMIN_KEYS`` (403).
    """
    state = app_state(request)
    if state["access"].open or state["settings"].open_metrics:
        return
    if not request_viewer(request).operator:
        raise Forbidden(f"{request.url.path} needs an operator's API key (QRS_ADMIN_KEYS).")


async def list_workers(request: Request) -> Response:
    """``GET /workers``: ``{"workers": [...]}``, every worker with a current heartbeat."""
    require_operator(request)
    live = await workers.live_workers(app_state(request)["pool"])
    entries = [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "device": w.device,
            "visible_devices": w.visible_devices,
            "queue": w.queue,
            "current_job": w.current_job,
            "jobs_done": w.jobs_done,
            "started": iso(w.started),
            "last_heartbeat": iso(w.heartbeat),
        }
        for w in live
    ]
    return MsgspecResponse({"workers": entries})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus exposition of jobs, queues and workers."""
    require_operator(request)
    body = await render_metrics(app_state(request)["pool"], app_state(request)["settings"].queue_name)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/ready", ready),
    Route("/workers", list_workers),
    Route("/metrics", metrics),
]
