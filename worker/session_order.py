"""Jobs of a dedicated session run one at a time, in submission order.

Batch jobs and jobs without a session run as soon as a worker takes them. A dedicated session's
job whose turn has not come (an earlier job of its session is not final) does not hold the worker
that dequeued it: :func:`check_turn` answers :attr:`Turn.WAIT` and ``worker/tasks.py`` hands the
job back to arq deferred by :func:`recheck_delay`, so the worker runs other jobs meanwhile (one
worker serves two sessions) and the job's time limit starts only when it runs. Two workers
therefore never run jobs of one dedicated session at once and none overtakes another. Before a
session job starts, the session is refreshed, which closes an expired session and cancels its
queued jobs (this one included).
"""

from __future__ import annotations

import enum

from qiskit_runtime_server.shared.models import JobRecord
from qiskit_runtime_server.shared.sessions import DEDICATED, SessionStore
from qiskit_runtime_server.shared.store import JobStore

# Bounds of the delay before a waiting job is looked at again, in seconds: short at first, so
# the next job of a session starts soon after the previous one, longer for a long wait.
MIN_RECHECK = 0.1
MAX_RECHECK = 2.0


class Turn(enum.Enum):
    """What a worker does with a job it dequeued."""

    RUN = "run"
    WAIT = "wait"  # an earlier job of its dedicated session is not final yet
    SKIP = "skip"  # cancelled, deleted, or its session closed: never run it


async def check_turn(store: JobStore, record: JobRecord) -> Turn:
    """Whether ``record`` may start now; never waits."""
    if not record.session_id:
        return Turn.RUN
    sessions = SessionStore(store.redis, store)
    found = await sessions.refresh(record.session_id)
    current = await store.get(record.id)
    if current is None or current.status.final:
        return Turn.SKIP
    if found is None or found[0].mode != DEDICATED:
        return Turn.RUN
    jobs = await sessions.session_jobs(found[0])
    ids = [j.id for j in jobs]
    position = ids.index(record.id) if record.id in ids else len(ids)
    return Turn.RUN if all(j.status.final for j in jobs[:position]) else Turn.WAIT


def recheck_delay(waited: float) -> float:
    """Seconds before a job that has waited ``waited`` seconds for its turn is looked at again."""
    return min(MAX_RECHECK, max(MIN_RECHECK, waited / 10))
