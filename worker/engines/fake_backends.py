"""The client's fake backends and their noise models, built once per process, and one job's
default share of memory."""

from __future__ import annotations

import importlib
import os
from functools import cache

from qiskit_aer.noise import NoiseModel
from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.fractional import with_fractional_gates


@cache
def fake_backend(name: str) -> FakeBackendV2:
    """The client's fake backend class for ``fake_<folder>``, instantiated once, with the
    fractional gates of its device (``worker/fractional.py``).

    Raises:
        ProgramError: no fake backend of that name ships with the installed client.
    """
    folder = name.removeprefix("fake_")
    try:
        module = importlib.import_module(f"qiskit_ibm_runtime.fake_provider.backends.{folder}")
    except ImportError:
        raise ProgramError(f"Backend {name} is not available on this worker.") from None
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, FakeBackendV2) and value is not FakeBackendV2:
            return with_fractional_gates(value())
    raise ProgramError(f"Backend {name} is not available on this worker.")


@cache
def backend_noise_model(name: str) -> NoiseModel:
    """The noise model of fake backend ``name`` built from its properties (cached per process)."""
    return NoiseModel.from_backend(fake_backend(name))




def default_memory_limit_mb() -> int:
    """Half of this machine's physical memory, in MiB: the default share of one job."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return max(256, total // 2 // 2**20)
