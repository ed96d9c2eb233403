"""``/backends``: the fake-backend catalogue (docs/protocol.md §4)."""

from __future__ import annotations

import functools
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qiskit_runtime_server.api.api_version import lists_device_names
from qiskit_runtime_server.api.auth import authenticate
from qiskit_runtime_server.api.dashboard.estimates import status_reads
from qiskit_runtime_server.api.faults import backend_status_fault, offline_backends
from qiskit_runtime_server.api.responses import MsgspecResponse, RawJSONResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.backends import ServedBackend
from qiskit_runtime_server.shared.errors import InvalidRequest

ONLINE = {"name": "online", "reason": "available"}


def _bool_param(value: str | None) -> bool:
    # The client sends include_mocks=True with a capital T (docs/protocol.md P15).
    return (value or "").lower() == "true"


async def list_backends(request: Request) -> Response:
    """``GET /backends``: every served name with status, qubit count, calibration id and the
    live queue length of its device (jobs sent under any of the device's names).

    Mock devices (``"class": "mock"``) only with ``include_mocks=true``, as on IBM. Clients
    of API versions before 2025-05-01 (qiskit-ibm-runtime 0.40) get the served names alone
    (api/api_version.py).
    """
    principal = authenticate(request)
    catalog = app_state(request)["catalog"]
    names = catalog.names(include_mocks=_bool_param(request.query_params.get("include_mocks")))
    if lists_device_names(request):
        return MsgspecResponse({"devices": names})
    everything = catalog.names(include_mocks=True)
    async with app_state(request)["store"].redis.pipeline(transaction=False) as pipe:
        for name in everything:
            pipe.scard(keys.pending(name))
        counts = dict(zip(everything, await pipe.execute(), strict=True))
    devices = [catalog.get(n).device_entry(sum(int(counts[m]) for m in catalog.same_queue(n))) for n in names]
    # Fault injection (api/faults.py): a backend_status rule shows its backend offline here too.
    offline = await offline_backends(request, names, principal.instance)
    for device in devices:
        if (rule := offline.get(str(device["name"]))) is not None and device["status"] == ONLINE:
            device["status"] = {"name": "offline", "reason": rule.status}
    return MsgspecResponse({"devices": devices})


def _served(request: Request) -> ServedBackend:
    """The path's backend, checked against the ``calibration_id`` query parameter if given.

    Raises:
        BackendNotFound, CalibrationNotFound: 404 (the client then raises ``QiskitBackendNotFoundError``).
    """
    backend: ServedBackend = app_state(request)["catalog"].get(request.path_params["name"])
    backend.check_calibration(request.query_params.get("calibration_id"))
    return backend


async def configuration(request: Request) -> Response:
    """``GET /backends/{name}/configuration``: the conf JSON, ``backend_name`` = served name.

    ``calibration_id`` must be the device's (404 otherwise).
    """
    authenticate(request)
    return RawJSONResponse(_served(request).configuration_json)


async def properties(request: Request) -> Response:
    """``GET /backends/{name}/properties``: calibration data with ``calibration_id``, ``{}``
    when there is none.

    ``updated_before`` (ISO 8601) returns the snapshot only if it is not newer than that date;
    ``calibration_id`` must be the device's (404 otherwise).
    """
    authenticate(request)
    backend = _served(request)
    if updated_before := request.query_params.get("updated_before"):
        try:
            when = datetime.fromisoformat(updated_before.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"updated_before is not an ISO 8601 date: {updated_before!r}") from None
        return RawJSONResponse(backend.properties_json_before(when))
    return RawJSONResponse(backend.properties_json)


async def status(request: Request) -> Response:
    """``GET /backends/{name}/status``: operational; ``length_queue`` counts the pending
    jobs of the device under all its names; ``estimated_wait_seconds`` (an extra field: the
    client's ``backend_status`` copies only the fields it knows, so it is ignored there) is
    the wait of a job submitted now, ``None`` without a live worker (api/dashboard/estimates.py;
    with IBM-like timing it includes the mean queue time, docs/timing.md).

    A ``backend_status`` fault rule (docs/faults.md) makes it ``"state": false`` with ``status``
    ``maintenance`` or ``internal``, as IBM reports a backend that is down: the client's
    ``backend.status().operational`` is then ``False`` and ``status_msg`` that status."""
    principal = authenticate(request)
    name = request.path_params["name"]
    catalog = app_state(request)["catalog"]
    backend = catalog.get(name)
    timed = functools.partial(app_state(request)["timing"].mean_queue_seconds, catalog)
    # The queue of every name of the device and the wait estimate: two round trips in all.
    estimate, queue = await status_reads(app_state(request)["pool"], [name], timed, catalog.same_queue(name))
    wait = estimate.wait_for(name)
    fault = await backend_status_fault(request, name, principal.instance)
    return MsgspecResponse(
        {
            "state": fault is None,
            "status": "active" if fault is None else fault.status,
            "message": "available" if fault is None else (fault.message or fault.status),
            "length_queue": queue,
            "backend_version": str(backend.configuration.get("backend_version", "1.0.0")),
            "estimated_wait_seconds": None if wait is None else round(wait, 3),
        }
    )


async def defaults(request: Request) -> Response:
    """``GET /backends/{name}/defaults``: 200 with ``null``, IBM's answer for a backend without
    pulse defaults (no fake backend of the client ships ``defs_*.json`` any more).

    qiskit-ibm-runtime 0.40 asks for it on the first attribute the backend object lacks (its
    ``__getattr__`` loads properties and defaults, e.g. for qiskit's transpiler
    ``hasattr(backend, "get_scheduling_stage_plugin")``) and keeps ``None`` for a falsy body;
    an error status raises ``RequestsApiError`` through ``hasattr``, an empty body a JSON
    decoding error. Unknown backends: 404.
    """
    authenticate(request)
    app_state(request)["catalog"].get(request.path_params["name"])
    return RawJSONResponse(b"null")


routes = [
    Route("/backends", list_backends),
    Route("/backends/{name}/configuration", configuration),
    Route("/backends/{name}/properties", properties),
    Route("/backends/{name}/status", status),
    Route("/backends/{name}/defaults", defaults),
]
