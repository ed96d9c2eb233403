"""The dashboard's analytics and queue API, under ``/dashboard/api`` (not IBM's ``/api/v1``).

The views are in ``analytics.py``, ``operations.py`` (queue, workers) and ``jobs.py`` (jobs,
sessions); this module is their route table.

Every answer comes from the aggregates ``shared/stats.py`` keeps as jobs change state and from
the job indexes; none scans job records, so each costs a bounded number of Redis commands with
any number of jobs stored (``bench/dashboard.py``). Each is narrowed to what the caller may see
(``viewer.py``); ``instance=`` narrows further to one instance the caller may see.

GET /dashboard/api/overview             jobs per state now, last hour, throughput, workers by device
GET /dashboard/api/trends               per hour (``unit=hour``, ``count`` <= 168) or day (<= 400)
GET /dashboard/api/status-distribution  jobs per state, overall and per backend
GET /dashboard/api/backends             per-backend utilisation and comparison over ``days``
GET /dashboard/api/queue                queue per backend, wait estimate, longest/shortest wait
GET /dashboard/api/percentiles          wait and run time p50/p90/p95/p99 over ``days``
GET /dashboard/api/usage                simulation seconds per instance in ``month`` (YYYY-MM)
GET /dashboard/api/workers              live workers, their current job and time busy today
GET /dashboard/api/jobs                 the jobs table (filters, search by id, paging)
GET /dashboard/api/jobs/{job_id}        one job: timestamps, attempts, worker, options, logs, reason
GET /dashboard/api/sessions             sessions and batches, newest first, with their jobs by state
"""

from __future__ import annotations

from starlette.routing import Route

from qiskit_runtime_server.api.dashboard.analytics import (
    backend_comparison,
    overview,
    percentile_view,
    status_distribution,
    trends,
    usage,
)
from qiskit_runtime_server.api.dashboard.jobs import job_detail, job_row, list_jobs, list_sessions
from qiskit_runtime_server.api.dashboard.operations import queue_view, worker_view

__all__ = ["job_row", "routes"]

routes = [
    Route("/overview", overview),
    Route("/trends", trends),
    Route("/status-distribution", status_distribution),
    Route("/backends", backend_comparison),
    Route("/queue", queue_view),
    Route("/percentiles", percentile_view),
    Route("/usage", usage),
    Route("/workers", worker_view),
    Route("/jobs", list_jobs),
    Route("/jobs/{job_id}", job_detail),
    Route("/sessions", list_sessions),
]
