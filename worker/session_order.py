"""Jobs of a dedicated session run one at a time, in submission order.

Batch jobs and jobs without a session run as soon as a worker takes them. A dedicated session's
job waits (in the worker that dequeued it) until every earlier job of its session is final, so
two workers never run jobs of one dedicated session at once and none overtakes another. Before
a session job starts, the session is refreshed, which closes an expired session and cancels its
queued jobs (this one included).
"""

from __future__ import annotations

import asyncio

from shared.models import JobRecord
from shared.sessions import DEDICATED, SessionStore
from shared.store import JobStore

POLL_INTERVAL = 0.1


async def wait_for_turn(store: JobStore, record: JobRecord) -> bool:
    """Wait until ``record`` may start; ``False`` if it must not run (cancelled, deleted, session closed)."""
    if not record.session_id:
        return True
    sessions = SessionStore(store.redis, store)
    while True:
        found = await sessions.refresh(record.session_id)
        current = await store.get(record.id)
        if current is None or current.status.final:
            return False
        if found is None or found[0].mode != DEDICATED:
            return True
        jobs = await sessions.session_jobs(found[0])
        ids = [j.id for j in jobs]
        position = ids.index(record.id) if record.id in ids else len(ids)
        if all(j.status.final for j in jobs[:position]):
            return True
        await asyncio.sleep(POLL_INTERVAL)
