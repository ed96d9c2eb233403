"""Who may use the routes that exist for tests: reset, import and fault rules.

Each is switched by its own variable (``QRS_ALLOW_RESET``, ``QRS_ALLOW_FAULTS``) with the same
three values: ``false`` refuses (403), ``true`` allows an admin key with access control on and,
in open mode, only a server bound to a loopback address, ``force`` also allows open mode on any
address (docs/security.md).
"""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from qiskit_runtime_server.api.dashboard.viewer import request_viewer
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared.errors import Forbidden

ADMIN_MODES = ("false", "true", "force")


def admin_mode(value: str, variable: str) -> str:
    """``value`` of ``variable`` lowercased: ``false``, ``true`` or ``force``.

    Raises:
        ValueError: any other value (start-up fails, naming the variable).
    """
    mode = value.strip().lower()
    if mode not in ADMIN_MODES:
        raise ValueError(f"{variable}={value!r} is not one of {', '.join(ADMIN_MODES)}")
    return mode


def loopback_bind(host: str) -> bool:
    """Whether ``QRS_HOST`` is a loopback address or ``localhost`` (no other machine reaches it)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_operator(request: Request) -> None:
    """Open mode, or an admin key (never ``QRS_OPEN_METRICS``: that opens reading metrics only).

    Raises:
        Forbidden: access control is on and the caller's key is not an operator's.
    """
    if app_state(request)["access"].open:
        return
    if not request_viewer(request).operator:
        raise Forbidden(f"{request.url.path} needs an operator's API key (QRS_ADMIN_KEYS).")


def require_admin_route(request: Request, mode: str, variable: str, doc: str) -> None:
    """Refuse a test-only admin route unless ``mode`` (the value of ``variable``) allows this caller.

    Raises:
        Forbidden: ``mode`` is ``false``; open mode on a non-loopback bind without ``force``; or
            access control is on and the caller's key is not an operator's.
    """
    host = app_state(request)["settings"].host
    path = request.url.path
    if mode == "false":
        raise Forbidden(f"{path} is turned off: set {variable}=true on the server ({doc}).")
    if app_state(request)["access"].open and mode != "force" and not loopback_bind(host):
        raise Forbidden(
            f"{path} is refused in open mode on a non-loopback address ({host}): turn access control "
            f"on and use an admin key, or set {variable}=force ({doc})."
        )
    require_operator(request)
