"""The Redis key layout; the only place that spells key names.

Every part that comes from a request or a record (instance CRN, job and session ids, backend,
program, tag values) is percent-encoded by :func:`part` before it is put into a key: an encoded
part holds no ``:``, so ``{instance}`` can never spell another instance's filter key (an
instance named ``<victim CRN>:backend:fake_lima`` once listed the victim's jobs) and no id can
reach a ``:params`` or ``:result`` key. Server-made ids and backend names are letters, digits
and ``_``, which encoding leaves as they are.

key                             type    content
qrs:job:{id}                    string  JobRecord (msgspec JSON)
qrs:job:{id}:params             string  ``params`` of POST /jobs, verbatim
qrs:job:{id}:result             string  RuntimeEncoder text of the result (or error text)
qrs:job:{id}:logs               list    the worker's log lines for the job
qrs:jobs:{instance}             zset    job ids of an instance, scored by creation time
qrs:jobs:{instance}:{f}:{v}     zset    the same, restricted to one GET /jobs filter value: f is
                                        backend, program, tag, session or state (pending|final)
qrs:listing:{token}             zset    short-lived intersection built by one GET /jobs
qrs:indexes                     zset    names of the job index keys above, scored by when their
                                        retention trim last ran (shared/job_index.py)
qrs:session:{id}                string  SessionRecord (msgspec JSON)
qrs:sessions:open               zset    ids of sessions not closed yet, scored by the latest time
                                        they can end (creation + 2 max_ttl)
qrs:pending:{backend}           set     ids of the backend's queued or running jobs
qrs:usage:{instance}:{YYYY-MM}  string  seconds of simulation used by the instance that month
qrs:jwt-secret                  string  token signing secret shared by every API process
qrs:finished                    channel ids of jobs that just reached a final state
qrs:enqueued                    channel queue names, published after each enqueue (wakes workers)
qrs:workers                     zset    worker ids, scored by their last heartbeat (UNIX seconds)
qrs:worker:{id}                 string  WorkerInfo (msgspec JSON), expires when heartbeats stop
qrs:stats:jobs                  hash    counters of finished jobs and duration histogram buckets
qrs:sweep-lock                  string  held by the worker running the orphan sweep (one lease)
qrs:job-events                  channel one JSON object per job state change (shared/stats.py)
qrs:dash:{scope}:now            hash    jobs per backend and state of a scope (totals summed when read):
                                        an instance, or ``all`` (shared/stats.py)
qrs:dash:{scope}:hour:{YYYYMMDDHH} hash per-hour counters of a scope (8 days)
qrs:dash:{scope}:day:{YYYYMMDD} hash    per-day counters and wait/run histograms of a scope (400 days)
qrs:dash:{scope}:status:{s}     zset    the scope's job ids in state s, scored by creation time
qrs:dash:{scope}:status:{s}:{b} zset    the same, on backend b only (state + backend filter, no ZINTERSTORE)
qrs:dash:all:jobs[:{f}:{v}]     zset    every instance's job ids (f: backend or program)
qrs:dash:usage:{YYYY-MM}        hash    instance -> simulation seconds that month
qrs:dash:runs:{backend}         list    the backend's latest running times (seconds), newest first
qrs:faults                      hash    fault rule id -> FaultRule (msgspec JSON; shared/faults.py)
qrs:faults:left                 hash    fault rule id -> firings left (rules with a count only)
qrs:faults:fired                hash    fault rule id -> times fired
"""

from __future__ import annotations

from urllib.parse import quote

PREFIX = "qrs:"
JWT_SECRET = f"{PREFIX}jwt-secret"
# Pub/sub channel on which the id of every job that reaches a final state is published.
FINISHED_CHANNEL = f"{PREFIX}finished"
# Pub/sub channel rung after every enqueue, with the queue name: wakes idle workers at once.
ENQUEUED_CHANNEL = f"{PREFIX}enqueued"
WORKERS = f"{PREFIX}workers"
JOB_STATS = f"{PREFIX}stats:jobs"
INDEXES = f"{PREFIX}indexes"
OPEN_SESSIONS = f"{PREFIX}sessions:open"
# Pub/sub channel of job state changes (JSON: id, instance, backend, program, status, times).
JOB_EVENTS_CHANNEL = f"{PREFIX}job-events"
# Fault injection (shared/faults.py): the rules, their firings left and their firings so far.
FAULTS = f"{PREFIX}faults"
FAULTS_LEFT = f"{PREFIX}faults:left"
FAULTS_FIRED = f"{PREFIX}faults:fired"
# The dashboard scope that aggregates every instance.
ALL_SCOPE = "all"


def part(value: str) -> str:
    """``value`` percent-encoded (RFC 3986 unreserved characters kept): no ``:``, ``*`` or ``%``.

    One-to-one, so two values never share a key; a lone surrogate is encoded as its own bytes
    (``surrogatepass``) rather than raising.
    """
    return quote(value, safe="", errors="surrogatepass")


def job(job_id: str) -> str:
    return f"{PREFIX}job:{part(job_id)}"


def job_params(job_id: str) -> str:
    return f"{PREFIX}job:{part(job_id)}:params"


def job_result(job_id: str) -> str:
    return f"{PREFIX}job:{part(job_id)}:result"


def job_logs(job_id: str) -> str:
    return f"{PREFIX}job:{part(job_id)}:logs"


def instance_jobs(instance: str) -> str:
    return f"{PREFIX}jobs:{part(instance)}"


def job_filter(instance: str, field: str, value: str) -> str:
    """Index of an instance's jobs whose ``field`` (backend, program, tag, session, state) is ``value``."""
    return f"{PREFIX}jobs:{part(instance)}:{field}:{part(value)}"


def listing_scratch(token: str) -> str:
    return f"{PREFIX}listing:{token}"


def session(session_id: str) -> str:
    return f"{PREFIX}session:{part(session_id)}"


def pending(backend: str) -> str:
    return f"{PREFIX}pending:{part(backend)}"


def usage(instance: str, period: str) -> str:
    return f"{PREFIX}usage:{part(instance)}:{period}"


def worker(worker_id: str) -> str:
    return f"{PREFIX}worker:{part(worker_id)}"


def dash_scope(instance: str | None) -> str:
    """The dashboard scope of ``instance``; ``None`` is every instance (``all``, never an encoded CRN)."""
    return ALL_SCOPE if instance is None else "i=" + part(instance)


def dash_now(scope: str) -> str:
    return f"{PREFIX}dash:{scope}:now"


def dash_hour(scope: str, hour: str) -> str:
    return f"{PREFIX}dash:{scope}:hour:{hour}"


def dash_day(scope: str, day: str) -> str:
    return f"{PREFIX}dash:{scope}:day:{day}"


def dash_status(scope: str, status: str, backend: str | None = None) -> str:
    """The scope's jobs in ``status`` (on ``backend`` only, if given)."""
    if backend is None:
        return f"{PREFIX}dash:{scope}:status:{status}"
    return f"{PREFIX}dash:{scope}:status:{status}:{part(backend)}"


def dash_all_jobs(field: str | None = None, value: str | None = None) -> str:
    """Every instance's jobs, or those whose ``field`` (backend, program) is ``value``."""
    if field is None or value is None:
        return f"{PREFIX}dash:all:jobs"
    return f"{PREFIX}dash:all:jobs:{field}:{part(value)}"


def dash_usage(period: str) -> str:
    return f"{PREFIX}dash:usage:{period}"


def dash_runs(backend: str) -> str:
    return f"{PREFIX}dash:runs:{part(backend)}"
