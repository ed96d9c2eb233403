"""The worker's fake backends with the fractional gates IBM offers on their device.

The API serves Heron and Nighthawk configurations with ``rzz`` and ``rx``
(``shared/fractional.py``); a job sent through ``service.backend(name,
use_fractional_gates=True)`` uses them, and no job says which way its backend was obtained. So
the worker's fake backend of such a device carries them always: its ``Target`` (what the ISA check
reads) lists ``rzz`` on every ``cz`` pair and ``rx`` on every qubit, with the errors and durations
``shared/fractional.py`` keeps or derives, and ``NoiseModel.from_backend`` gives both gates a
depolarizing and thermal-relaxation error from them, as for every other gate. The other
instructions of the target, and their errors, are unchanged.

The client's ``FakeBackendV2`` builds its ``Target`` on first use from ``_conf_dict`` and
``_props_dict`` (``tests/unit/test_library_contracts.py`` checks they are still there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qiskit_runtime_server.shared.fractional import fractional_configuration, fractional_properties

if TYPE_CHECKING:
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2


def with_fractional_gates(backend: FakeBackendV2) -> FakeBackendV2:
    """``backend`` with ``rzz``/``rx`` in its configuration, properties and ``Target`` when its
    device offers fractional gates; unchanged otherwise. Call it before the target is read."""
    conf = backend._conf_dict
    served = fractional_configuration(conf)
    if served is conf:
        return backend
    if backend._props_dict is None:
        backend._set_props_dict_from_json()  # decoded as the client decodes it (dates parsed)
    if backend._props_dict is not None:
        backend._props_dict = fractional_properties(backend._props_dict, conf)
    backend._conf_dict = served
    backend._target = None
    return backend
