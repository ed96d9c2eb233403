"""``/backends``: the fake-backend catalogue (PROTOCOL.md §4)."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate
from api.responses import MsgspecResponse, RawJSONResponse
from shared import keys
from shared.errors import InvalidRequest, NotFound


async def list_backends(request: Request) -> Response:
    """``GET /backends``: every fake backend with status, qubit count and live queue length."""
    authenticate(request)
    catalog = request.state.catalog
    names = catalog.names()
    async with request.state.store.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.scard(keys.pending(name))
        counts = await pipe.execute()
    devices = [catalog.get(n).device_entry(int(c)) for n, c in zip(names, counts, strict=True)]
    return MsgspecResponse({"devices": devices})


async def configuration(request: Request) -> Response:
    """``GET /backends/{name}/configuration``: the conf JSON, ``backend_name`` = served name."""
    authenticate(request)
    backend = request.state.catalog.get(request.path_params["name"])
    return RawJSONResponse(backend.configuration_json)


async def properties(request: Request) -> Response:
    """``GET /backends/{name}/properties``: calibration data, ``{}`` when there is none.

    ``updated_before`` (ISO 8601) returns the snapshot only if it is not newer than that date.
    """
    authenticate(request)
    backend = request.state.catalog.get(request.path_params["name"])
    if updated_before := request.query_params.get("updated_before"):
        try:
            when = datetime.fromisoformat(updated_before.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"updated_before is not an ISO 8601 date: {updated_before!r}") from None
        return RawJSONResponse(backend.properties_json_before(when))
    return RawJSONResponse(backend.properties_json)


async def status(request: Request) -> Response:
    """``GET /backends/{name}/status``: always operational; ``length_queue`` counts pending jobs."""
    authenticate(request)
    name = request.path_params["name"]
    backend = request.state.catalog.get(name)
    queue = await request.state.store.pending_count(name)
    return MsgspecResponse(
        {
            "state": True,
            "status": "active",
            "message": "available",
            "length_queue": queue,
            "backend_version": str(backend.configuration.get("backend_version", "1.0.0")),
        }
    )


async def defaults(request: Request) -> Response:
    """``GET /backends/{name}/defaults``: fake backends carry no pulse defaults."""
    authenticate(request)
    name = request.path_params["name"]
    request.state.catalog.get(name)
    raise NotFound(f"Backend {name} has no pulse defaults.")


routes = [
    Route("/backends", list_backends),
    Route("/backends/{name}/configuration", configuration),
    Route("/backends/{name}/properties", properties),
    Route("/backends/{name}/status", status),
    Route("/backends/{name}/defaults", defaults),
]
