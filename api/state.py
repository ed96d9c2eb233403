"""What the lifespan builds once and every handler reads from ``request.state``."""

from __future__ import annotations

from typing import TypedDict

from arq.connections import ArqRedis

from qiskit_runtime_server.api.access import AccessPolicy
from qiskit_runtime_server.api.finished import FinishedJobs
from qiskit_runtime_server.shared.backends import BackendCatalog
from qiskit_runtime_server.shared.sessions import SessionStore
from qiskit_runtime_server.shared.settings import Settings
from qiskit_runtime_server.shared.store import JobStore


class AppState(TypedDict):
    settings: Settings
    pool: ArqRedis
    store: JobStore
    catalog: BackendCatalog
    jwt_secret: str
    finished: FinishedJobs
    access: AccessPolicy
    sessions: SessionStore
