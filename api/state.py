"""What the lifespan builds once, and :func:`app_state`, the typed way handlers read it."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict, cast

from arq.connections import ArqRedis
from starlette.requests import HTTPConnection

from qiskit_runtime_server.api.access import AccessPolicy
from qiskit_runtime_server.api.finished import FinishedJobs
from qiskit_runtime_server.shared.backends import BackendCatalog
from qiskit_runtime_server.shared.sessions import SessionStore
from qiskit_runtime_server.shared.settings import Settings
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.shared.timing import TimingPolicy

if TYPE_CHECKING:  # live.py reads the state through app_state: a run-time import would be circular
    from qiskit_runtime_server.api.dashboard.live import LiveHub


class AppState(TypedDict):
    """The lifespan state: one of each per API process, shared by every request."""

    settings: Settings
    pool: ArqRedis
    store: JobStore
    catalog: BackendCatalog
    jwt_secret: str
    finished: FinishedJobs
    access: AccessPolicy
    sessions: SessionStore
    live: LiveHub
    timing: TimingPolicy


def app_state(connection: HTTPConnection) -> AppState:
    """The lifespan's :class:`AppState` for a request or WebSocket connection.

    Starlette copies the lifespan's state into every connection's scope; ``request.state``
    exposes it untyped, this gives it its type.
    """
    return cast(AppState, connection.scope["state"])
