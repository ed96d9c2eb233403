"""The Redis key layout; the only place that spells key names.

key                             type    content
qrs:job:{id}                    string  JobRecord (msgspec JSON)
qrs:job:{id}:params             string  ``params`` of POST /jobs, verbatim
qrs:job:{id}:result             string  RuntimeEncoder text of the result (or error text)
qrs:job:{id}:logs               list    the worker's log lines for the job
qrs:jobs:{instance}             zset    job ids of an instance, scored by creation time
qrs:jobs:{instance}:{f}:{v}     zset    the same, restricted to one GET /jobs filter value: f is
                                        backend, program, tag, session or state (pending|final)
qrs:listing:{token}             zset    short-lived intersection built by one GET /jobs
qrs:session:{id}                string  SessionRecord (msgspec JSON)
qrs:pending:{backend}           set     ids of the backend's queued or running jobs
qrs:usage:{instance}:{YYYY-MM}  string  seconds of simulation used by the instance that month
qrs:jwt-secret                  string  token signing secret shared by every API process
qrs:finished                    channel ids of jobs that just reached a final state
qrs:enqueued                    channel queue names, published after each enqueue (wakes workers)
qrs:workers                     zset    worker ids, scored by their last heartbeat (UNIX seconds)
qrs:worker:{id}                 string  WorkerInfo (msgspec JSON), expires when heartbeats stop
qrs:stats:jobs                  hash    counters of finished jobs and duration histogram buckets
qrs:sweep-lock                  string  held by the worker running the orphan sweep (one lease)
"""

from __future__ import annotations

PREFIX = "qrs:"
JWT_SECRET = f"{PREFIX}jwt-secret"
# Pub/sub channel on which the id of every job that reaches a final state is published.
FINISHED_CHANNEL = f"{PREFIX}finished"
# Pub/sub channel rung after every enqueue, with the queue name: wakes idle workers at once.
ENQUEUED_CHANNEL = f"{PREFIX}enqueued"
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


def job_filter(instance: str, field: str, value: str) -> str:
    """Index of an instance's jobs whose ``field`` (backend, program, tag, session, state) is ``value``."""
    return f"{PREFIX}jobs:{instance}:{field}:{value}"


def listing_scratch(token: str) -> str:
    return f"{PREFIX}listing:{token}"


def session(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def pending(backend: str) -> str:
    return f"{PREFIX}pending:{backend}"


def usage(instance: str, period: str) -> str:
    return f"{PREFIX}usage:{instance}:{period}"


def worker(worker_id: str) -> str:
    return f"{PREFIX}worker:{worker_id}"
