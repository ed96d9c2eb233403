"""The dashboard's live operations views: the queue per backend and the workers."""

from __future__ import annotations

import functools
import time

from starlette.requests import Request
from starlette.responses import Response

from qiskit_runtime_server.api.dashboard.common import caller_scopes
from qiskit_runtime_server.api.dashboard.estimates import queue_estimate
from qiskit_runtime_server.api.dashboard.viewer import request_viewer
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared import keys, stats, workers
from qiskit_runtime_server.shared.models import JobStatus, iso


async def queue_view(request: Request) -> Response:
    """``GET /dashboard/api/queue``: per backend with jobs or recent runs ``{"backend", "queued", "running",
    "mean_run_seconds", "estimated_wait_seconds", "estimated_turnaround_seconds"}`` and a summary
    (total queued and running, workers, the estimated wait of a new job, the backends with the
    longest and shortest estimated turnaround, the age of the oldest queued job the caller may see).

    Queue lengths are deployment-wide, as ``length_queue`` of ``/backends/{name}/status`` is.
    """
    _, scopes = caller_scopes(request)
    state = app_state(request)
    served = state["catalog"].names(include_mocks=False)
    est = await queue_estimate(
        state["pool"], served, functools.partial(state["timing"].mean_queue_seconds, state["catalog"])
    )
    rows = []
    # Backends with jobs now, and those with recent running times (their turnaround is known).
    recent = {b for b, mean in est.mean_run.items() if mean is not None}
    for backend in sorted(set(est.queued) | set(est.running) | recent):
        rows.append(
            {
                "backend": backend,
                "queued": est.queued.get(backend, 0),
                "running": est.running.get(backend, 0),
                "mean_run_seconds": est.mean_run.get(backend),
                "estimated_wait_seconds": est.wait_for(backend),
                "estimated_turnaround_seconds": est.turnaround(backend),
            }
        )
    turnaround = {str(r["backend"]): est.turnaround(str(r["backend"])) for r in rows}
    known = sorted((t, b) for b, t in turnaround.items() if t is not None)
    oldest_age = None
    async with state["pool"].pipeline(transaction=False) as pipe:
        for scope in scopes:
            pipe.zrange(keys.dash_status(scope, JobStatus.QUEUED.value), 0, 0, withscores=True)
        replies = await pipe.execute()
    created = [float(score) for reply in replies for _, score in reply]
    if created:
        oldest_age = round(max(0.0, time.time() - min(created)), 3)
    return MsgspecResponse(
        {
            "backends": rows,
            "summary": {
                "queued": sum(est.queued.values()),
                "running": sum(est.running.values()),
                "workers": est.workers,
                "estimated_wait_seconds": est.wait_seconds,
                "longest_wait": known[-1][1] if known else None,
                "shortest_wait": known[0][1] if known else None,
                "oldest_queued_age_seconds": oldest_age,
            },
        }
    )


async def worker_view(request: Request) -> Response:
    """``GET /dashboard/api/workers``: ``{"workers": [{"id", "device", "host", "current_job",
    "jobs_done", "last_heartbeat", "busy_seconds_today"}]}``. A viewer limited to some instances
    sees another instance's running job as ``"current_job": "(other instance)"``."""
    viewer = request_viewer(request)
    redis = app_state(request)["pool"]
    live = await workers.live_workers(redis)
    current = [w.current_job for w in live if w.current_job]
    records = {r.id: r for r in await app_state(request)["store"].many(current)} if current else {}
    (today,) = await stats.read_buckets(redis, [keys.ALL_SCOPE], "day", [stats.day_label(time.time())])
    rows = []
    for w in live:
        job = w.current_job
        if job is not None and not viewer.sees(records[job].instance if job in records else ""):
            job = "(other instance)"
        rows.append(
            {
                "id": w.id,
                "host": w.host,
                "device": w.device,
                "visible_devices": w.visible_devices,
                "current_job": job,
                "jobs_done": w.jobs_done,
                "started": iso(w.started),
                "last_heartbeat": iso(w.heartbeat),
                "busy_seconds_today": round(today.get(f"worker_s|{w.id}", 0.0), 3) if viewer.operator else None,
            }
        )
    return MsgspecResponse({"workers": rows})
