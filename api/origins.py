"""Which ``Host`` and ``Origin`` headers this server answers (docs/security.md).

A server on a laptop's loopback address is still reachable from every web page its user opens:

* **DNS rebinding.** A page of ``attacker.example`` whose name is then re-pointed at
  ``127.0.0.1`` is, for the browser, same-origin with this server, so it can read every answer.
  Its requests carry ``Host: attacker.example``: :class:`HostCheckMiddleware` answers any
  ``Host`` that is not in the allow-list (``QRS_ALLOWED_HOSTS``) with 400, before routing.
* **Cross-origin pages.** A page of another origin cannot read a cross-origin HTTP answer
  (no CORS headers are ever sent), but browsers send simple requests anyway and do not apply
  CORS to WebSockets at all. A request whose ``Origin`` is not one of this server's own
  (:func:`origin_allowed`) is refused: 403 for HTTP here, and ``/dashboard/ws`` closes before
  accepting (``api/dashboard/live.py``). Requests without ``Origin`` (the client, curl,
  Prometheus: anything but a browser) are not affected.

Host names compare case-insensitively, without the port and a trailing dot; IPv6 addresses are
written in brackets (``[::1]``).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from qiskit_runtime_server.api.proxy.hosts import PROXIED_HOSTS
from qiskit_runtime_server.api.responses import error_response
from qiskit_runtime_server.shared.errors import Forbidden, InvalidRequest
from qiskit_runtime_server.shared.settings import Settings

logger = logging.getLogger("qrs.api")

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# Bind addresses that mean "every interface": they name no host a client would use.
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_host(host: str) -> str:
    """``host`` (no port) lowercased, without a trailing dot, an IPv6 address in brackets."""
    host = host.strip().lower().rstrip(".")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host


def split_host_header(value: str) -> tuple[str, int | None]:
    """``(host, port)`` of a ``Host`` header value (``"[::1]:8000"`` -> ``("[::1]", 8000)``)."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        host, rest = (value[: end + 1], value[end + 1 :]) if end > 0 else (value, "")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = value.partition(":")
    port = int(port_text) if port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 else None
    return normalize_host(host), port


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The host names of ``QRS_ALLOWED_HOSTS`` (entries may be ``*.domain`` patterns); ``None`` for any.

    Unset: the loopback names, and ``QRS_HOST`` when it is one specific address or name. Always
    added: the host of ``QRS_PUBLIC_URL``, and in proxy mode IBM's hosts (tunnelled requests keep
    IBM's ``Host``; no attacker can point those names at this machine).
    """
    if settings.allowed_hosts is not None and settings.allowed_hosts.strip():
        entries = [e for e in (part.strip() for part in settings.allowed_hosts.split(",")) if e]
        if "*" in entries:
            return None
    else:
        entries = list(LOOPBACK_HOSTS)
        if settings.host.strip().lower() not in WILDCARD_BINDS:
            entries.append(settings.host)
    if settings.public_url:
        public = urlsplit(settings.public_url).hostname
        if public:
            entries.append(public)
    if settings.proxy_port is not None:
        entries.extend(PROXIED_HOSTS)
    return frozenset(normalize_host(e) for e in entries)


def host_allowed(host: str, allowed: frozenset[str] | None) -> bool:
    """Whether ``host`` (normalized) is in ``allowed`` or matches one of its ``*.`` patterns."""
    if allowed is None or host in allowed:
        return True
    return any(p.startswith("*.") and fnmatch.fnmatchcase(host, p) for p in allowed)


def own_origins(settings: Settings) -> frozenset[str]:
    """The origins (``scheme://host[:port]``) of this server's own pages, apart from its ``Host``.

    The loopback names on the bound port, the bound address itself, and ``QRS_PUBLIC_URL``'s origin.
    """
    names = list(LOOPBACK_HOSTS)
    if settings.host.strip().lower() not in WILDCARD_BINDS:
        names.append(normalize_host(settings.host))
    origins = {f"http://{name}:{settings.port}" for name in names}
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        if parts.scheme and parts.hostname:
            origins.add(_origin(parts.scheme, parts.hostname, parts.port))
    return frozenset(origins)


def _origin(scheme: str, host: str, port: int | None) -> str:
    scheme = scheme.lower()
    host = normalize_host(host)
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _parse_origin(value: str) -> str | None:
    """The canonical form of an ``Origin`` header, or ``None`` for ``null`` or a malformed one."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    return _origin(parts.scheme, parts.hostname, port)


def origin_allowed(headers: Mapping[str, str], settings: Settings) -> bool:
    """Whether a request's ``Origin`` is this server's own: absent (not a browser), one of
    :func:`own_origins`, or the origin of the request's own ``Host`` (a page this server served
    under that name, e.g. through a published container port or a reverse proxy).

    ``Host`` itself is checked by :class:`HostCheckMiddleware`, so a rebinding page that
    matches its own ``Host`` is refused there.
    """
    value = headers.get("origin")
    if value is None:
        return True
    origin = _parse_origin(value)
    if origin is None:
        return False
    if origin in own_origins(settings):
        return True
    host, port = split_host_header(headers.get("host", ""))
    if not host:
        return False
    scheme = origin.split("://", 1)[0]
    return origin == _origin(scheme, host, port)


class HostCheckMiddleware:
    """Refuses requests whose ``Host`` is not allowed (400, IBM's format) and HTTP requests
    from a foreign ``Origin`` (403); WebSockets with a foreign ``Host`` are closed before being
    accepted (the server answers 403). A request without ``Host`` (HTTP/1.0) passes."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.allowed = allowed_hosts(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope["headers"])
        host, _ = split_host_header(headers.get("host", ""))
        if host and not host_allowed(host, self.allowed):
            logger.warning("refused a request for host %.100r (not in QRS_ALLOWED_HOSTS)", host)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": ""})
                return
            invalid = InvalidRequest(
                f"Invalid Host header {host[:100]!r}: this server answers only its own names (QRS_ALLOWED_HOSTS)."
            )
            await error_response(invalid)(scope, receive, send)
            return
        if scope["type"] == "http" and not origin_allowed(headers, self.settings):
            logger.warning("refused a request from origin %.100r (not this server's)", headers.get("origin"))
            forbidden = Forbidden("Requests from another origin are not accepted.")
            await error_response(forbidden)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The first value of ``host`` and ``origin`` (the only headers read here)."""
    out: dict[str, str] = {}
    for name, value in raw:
        if name in (b"host", b"origin") and name.decode() not in out:
            out[name.decode()] = value.decode("latin-1")
    return out
