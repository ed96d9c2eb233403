"""Query-string parameters shared by the job listing and the dashboard API."""

from __future__ import annotations

from starlette.requests import Request

from qiskit_runtime_server.shared.errors import InvalidRequest


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as an integer in ``[low, high]``; ``default`` when absent or empty.

    Raises:
        InvalidRequest: not an integer, or outside the range (400 in IBM's error format).
    """
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"Query parameter {name} must be an integer, got {raw!r}.") from None
    if not low <= value <= high:
        raise InvalidRequest(f"Query parameter {name} must be between {low} and {high}, got {value}.")
    return value
