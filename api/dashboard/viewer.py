"""Who is looking at the dashboard, and which instances' jobs they may see.

Same isolation as the runtime API (``api/access.py``): in open mode every caller sees every
instance; with access control on, a key listed in ``QRS_ADMIN_KEYS`` (an operator) sees every
instance and any other key only the instances the access policy gives it. Credentials are the
runtime API's: ``Authorization: apikey <key>`` or ``Bearer <token from /identity/token>``; the
WebSocket, which browsers cannot give headers, takes the key in its first message instead.
"""

from __future__ import annotations

import msgspec
from starlette.requests import HTTPConnection

from qiskit_runtime_server.api import auth
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.errors import Forbidden, NotAuthorized


class Viewer(msgspec.Struct, frozen=True):
    """``instances`` is ``None`` for every instance (open mode, operators), else the visible CRNs."""

    instances: frozenset[str] | None
    operator: bool

    def sees(self, instance: str) -> bool:
        return self.instances is None or instance in self.instances

    def scopes(self, instance: str | None = None) -> list[str]:
        """The aggregate scopes (``shared/stats.py``) to read, narrowed to ``instance`` if given.

        Raises:
            Forbidden: ``instance`` is not one the viewer may see (403).
        """
        if instance:
            if not self.sees(instance):
                raise Forbidden(f"The API key is not authorized for instance {instance}.")
            return [keys.dash_scope(instance)]
        if self.instances is None:
            return [keys.ALL_SCOPE]
        return [keys.dash_scope(i) for i in sorted(self.instances)]


def admin_ids(setting: str | None) -> frozenset[str]:
    """Key ids (``auth.key_id``) of the comma-separated ``QRS_ADMIN_KEYS``."""
    return frozenset(auth.key_id(k.strip()) for k in (setting or "").split(",") if k.strip())


def viewer_for_key(connection: HTTPConnection, api_key: str | None) -> Viewer:
    """The viewer of a plain API key (the WebSocket's first message).

    Raises:
        NotAuthorized: access control is on and the key is missing or unknown (401).
    """
    state = app_state(connection)
    access = state["access"]
    if access.open:
        return Viewer(None, True)
    if not api_key:
        raise NotAuthorized("An API key is needed: access control is on.")
    return _viewer_for_id(connection, auth.key_id(api_key))


def _viewer_for_id(connection: HTTPConnection, user: str) -> Viewer:
    state = app_state(connection)
    if user in admin_ids(state["settings"].admin_keys):
        return Viewer(None, True)
    if not state["access"].knows(user):
        raise NotAuthorized("The API key is not valid.")
    return Viewer(state["access"].instances(user), False)


def request_viewer(connection: HTTPConnection) -> Viewer:
    """The viewer of a dashboard API request (``Authorization`` header, as the runtime API takes it).

    Raises:
        NotAuthorized: access control is on and the credentials are missing or invalid (401).
    """
    state = app_state(connection)
    if state["access"].open:
        return Viewer(None, True)
    header = connection.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "apikey" and credential:
        return _viewer_for_id(connection, auth.key_id(credential))
    if scheme.lower() == "bearer" and credential:
        return _viewer_for_id(connection, auth._verified_subject(credential, state["jwt_secret"]))
    raise NotAuthorized("Missing or malformed Authorization header.")
