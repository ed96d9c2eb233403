"""What the lifespan builds once and every handler reads from ``request.state``."""

from __future__ import annotations

from typing import TypedDict

from arq.connections import ArqRedis

from api.access import AccessPolicy
from api.finished import FinishedJobs
from shared.backends import BackendCatalog
from shared.sessions import SessionStore
from shared.settings import Settings
from shared.store import JobStore


class AppState(TypedDict):
    settings: Settings
    pool: ArqRedis
    store: JobStore
    catalog: BackendCatalog
    jwt_secret: str
    finished: FinishedJobs
    access: AccessPolicy
    sessions: SessionStore
