"""Client-side helpers for the server's fault injection (``/admin/faults``, docs/faults.md).

Plain functions over the standard library (no extra dependency), for tests and scripts::

    from qiskit_runtime_server.testing.faults import add_fault, clear_faults, injected_fault

    add_fault("http://127.0.0.1:8000", effect="http_error", route="/jobs", method="POST",
              status_code=503, count=2)
    with injected_fault(url, effect="backend_status", backend="fake_manila"):
        assert not service.backend("fake_manila").status().operational
    clear_faults(url)

``url`` is the server's base URL (``IAM_URL`` of the printed client recipe); a runtime URL such
as ``http://host:8000/experimental/api/v1`` (``QISKIT_IBM_URL``) is accepted too. ``admin_key`` is
needed when access control is on (a key of ``QRS_ADMIN_KEYS``); in open mode leave it out.
The server must allow changes (``QRS_ALLOW_FAULTS``).
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = [
    "FaultApiError",
    "add_fault",
    "clear_faults",
    "injected_fault",
    "injected_faults",
    "list_faults",
    "remove_fault",
]

TIMEOUT = 30.0


class FaultApiError(RuntimeError):
    """A non-2xx answer of ``/admin/faults``: its status and IBM-format body."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"/admin/faults answered {status}: {body}")
        self.status = status
        self.body = body


def admin_url(url: str) -> str:
    """``{base}/admin/faults`` for a base URL, or for a runtime URL ending in ``/api/v1``."""
    parts = urlsplit(url.rstrip("/"))
    path = parts.path
    cut = path.find("/api/v1")
    if cut >= 0:
        path = path[:cut]
        path = path.removesuffix("/experimental")
    return urlunsplit((parts.scheme, parts.netloc, path.rstrip("/") + "/admin/faults", "", ""))


def _call(method: str, url: str, admin_key: str | None, body: Mapping[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if admin_key:
        request.add_header("Authorization", f"apikey {admin_key}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        raise FaultApiError(exc.code, exc.read().decode(errors="replace")) from None
    return json.loads(text) if text else None


def add_fault(url: str, admin_key: str | None = None, **rule: Any) -> dict[str, Any]:
    """Add one rule (``effect=...`` and its fields, docs/faults.md); returns it with its ``id``.

    Raises:
        FaultApiError: refused (403: ``QRS_ALLOW_FAULTS`` or the key) or invalid (400).
    """
    stored: dict[str, Any] = _call("POST", admin_url(url), admin_key, rule)
    return stored


def list_faults(url: str, admin_key: str | None = None) -> list[dict[str, Any]]:
    """Every rule, oldest first, each with ``remaining`` (``None``: unlimited) and ``fired``."""
    listing: dict[str, list[dict[str, Any]]] = _call("GET", admin_url(url), admin_key)
    return listing["faults"]


def remove_fault(url: str, fault_id: str, admin_key: str | None = None, *, missing_ok: bool = True) -> bool:
    """Remove one rule; whether it was there (an unknown id raises unless ``missing_ok``)."""
    try:
        _call("DELETE", f"{admin_url(url)}/{quote(fault_id, safe='')}", admin_key)
    except FaultApiError as exc:
        if exc.status == 404 and missing_ok:
            return False
        raise
    return True


def clear_faults(url: str, admin_key: str | None = None) -> int:
    """Remove every rule; how many there were."""
    answer: dict[str, int] = _call("DELETE", admin_url(url), admin_key)
    return answer["removed"]


@contextlib.contextmanager
def injected_fault(url: str, admin_key: str | None = None, **rule: Any) -> Iterator[dict[str, Any]]:
    """A rule for the ``with`` block: added on entry (yielded as stored), removed on exit."""
    with injected_faults(url, [rule], admin_key) as stored:
        yield stored[0]


@contextlib.contextmanager
def injected_faults(
    url: str, rules: Iterable[Mapping[str, Any]], admin_key: str | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Several rules for the ``with`` block, removed on exit (also those added before a refusal)."""
    stored: list[dict[str, Any]] = []
    try:
        for rule in rules:
            stored.append(add_fault(url, admin_key, **rule))
        yield stored
    finally:
        for entry in stored:
            remove_fault(url, entry["id"], admin_key)
