"""``/instances/usage``: simulation time consumed by the calling instance (docs/protocol.md §7)."""

from __future__ import annotations

import calendar
import math
import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qiskit_runtime_server.api.auth import PLAN_ID, authenticate
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared.store import usage_period


async def usage(request: Request) -> Response:
    """``GET /instances/usage``: seconds consumed this calendar month (UTC), and the limit if configured.

    As IBM reports them, in whole seconds: consumed rounded up (a month with any simulation shows
    at least 1), the limit as an integer when it is one, so the client's
    ``usage_remaining_seconds`` (limit - consumed) is an integer too. ``usage_limit_reached``
    compares the exact figures: it turns true once the instance's limit
    (``QRS_USAGE_LIMIT_SECONDS`` or the access file's ``usage_limits``) is used up; ``POST /jobs``
    is then refused with 403.
    """
    principal = authenticate(request)
    now = time.time()
    period = usage_period(now)
    consumed = await app_state(request)["store"].usage_seconds(principal.instance, period)
    limit = app_state(request)["access"].usage_limit(principal.instance)
    year, month = (int(x) for x in period.split("-"))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year, month, calendar.monthrange(year, month)[1], 23, 59, 59, tzinfo=UTC)
    return MsgspecResponse(
        {
            "instance_id": principal.instance,
            "plan_id": PLAN_ID,
            "usage_consumed_seconds": math.ceil(round(consumed, 6)),
            "usage_limit_seconds": int(limit) if limit is not None and float(limit).is_integer() else limit,
            "usage_allocation_seconds": None,
            "usage_limit_reached": limit is not None and consumed >= limit,
            "usage_period": {"start_time": start.isoformat(), "end_time": end.isoformat()},
        }
    )


routes = [Route("/instances/usage", usage)]
