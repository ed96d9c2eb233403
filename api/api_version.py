"""The ``IBM-API-Version`` request header: which dialect of the runtime API a client speaks.

IBM's runtime API is versioned by date: every client sends the date of the API it was written
for, and IBM answers in the shape of that date (``qiskit_ibm_runtime/api/rest/base.py``:
``2024-01-01`` up to 0.40, ``2025-05-01`` from 0.41, ``2026-04-15`` from 0.48; QRMI sends
``2025-01-01``). The only shape that differs between these dates is ``GET /backends``, see
:func:`lists_device_names`.
"""

from __future__ import annotations

from datetime import date

from starlette.requests import Request

HEADER = "IBM-API-Version"

DEVICE_OBJECTS_SINCE = date(2025, 1, 1)
"""The first API version whose ``GET /backends`` lists ``devices`` as objects, as IBM's API does
from ``2025-01-01`` (the version QRMI's client sends and reads as ``BackendsResponseV2``;
qiskit-ibm-runtime 0.41.0, the release that reads ``devices`` as dicts, sends ``2025-05-01``)."""


def requested_version(request: Request) -> date | None:
    """The ``IBM-API-Version`` date of ``request``; ``None`` when absent or not an ISO date."""
    raw = request.headers.get(HEADER, "").strip()
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def lists_device_names(request: Request) -> bool:
    """Whether ``GET /backends`` answers ``request`` with ``devices`` as a list of names.

    Mirrors IBM's API versions before ``2025-01-01`` (qiskit-ibm-runtime 0.40 and older send
    ``2024-01-01``): ``{"devices": ["ibm_brisbane", ...]}``, the names the client puts in a
    ``set`` (``QiskitRuntimeService.backends``; objects there raise ``TypeError: unhashable
    type: 'dict'``). Later versions, a missing header and an unparseable one get the current
    shape, one object per device with status, qubits, queue length and calibration id.
    """
    version = requested_version(request)
    return version is not None and version < DEVICE_OBJECTS_SINCE
