"""The Redis key layout; the only place that spells key names.

key                             type    content
qrs:job:{id}                    string  JobRecord (msgspec JSON)
qrs:job:{id}:params             string  ``params`` of POST /jobs, verbatim
qrs:job:{id}:result             string  RuntimeEncoder text of the result (or error text)
qrs:job:{id}:logs               list    the worker's log lines for the job
qrs:jobs:{instance}             zset    job ids of an instance, scored by creation time
qrs:pending:{backend}           set     ids of the backend's queued or running jobs
qrs:usage:{instance}:{YYYY-MM}  string  seconds of simulation used by the instance that month
qrs:jwt-secret                  string  token signing secret shared by every API process
qrs:workers                     zset    worker ids, scored by their last heartbeat (UNIX seconds)
qrs:worker:{id}                 string  WorkerInfo (msgspec JSON), expires when heartbeats stop
qrs:stats:jobs                  hash    counters of finished jobs and duration histogram buckets
qrs:sweep-lock                  string  held by the worker running the orphan sweep (one lease)
"""

from __future__ import annotations

PREFIX = "qrs:"
JWT_SECRET = f"{PREFIX}jwt-secret"
WORKERS = f"{PREFIX}workers"
JOB_STATS = f"{PREFIX}stats:jobs"
PENDING_PATTERN = f"{PREFIX}pending:*"


def job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def job_params(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:params"


def job_result(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:result"


def job_logs(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:logs"


def instance_jobs(instance: str) -> str:
    return f"{PREFIX}jobs:{instance}"


def pending(backend: str) -> str:
    return f"{PREFIX}pending:{backend}"


def usage(instance: str, period: str) -> str:
    return f"{PREFIX}usage:{instance}:{period}"


def worker(worker_id: str) -> str:
    return f"{PREFIX}worker:{worker_id}"
