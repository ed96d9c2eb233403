"""qiskit-aer executor: noisy simulation of a fake backend, on CPU or GPU.

The backend's noise model (``NoiseModel.from_backend`` on the client's fake backend, as local
testing mode builds it) is built once per backend and reused by every later job.
Sampling and estimation use Qiskit's ``BackendSamplerV2``/``BackendEstimatorV2`` over an
``AerSimulator``, the same primitives local testing mode uses, so results match it statistically.
"""

from __future__ import annotations

import importlib
from functools import cache

from qiskit.primitives import BackendEstimatorV2, BackendSamplerV2, PrimitiveResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel
from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

from worker.errors import ProgramError


@cache
def fake_backend(name: str) -> FakeBackendV2:
    """The client's fake backend class for ``fake_<folder>``, instantiated once.

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
            return value()
    raise ProgramError(f"Backend {name} is not available on this worker.")


@cache
def backend_noise_model(name: str) -> NoiseModel:
    """The noise model of fake backend ``name`` built from its properties (cached per process)."""
    return NoiseModel.from_backend(fake_backend(name))


class AerExecutor:
    """Runs PUBs on ``AerSimulator(device=device)`` with the backend's (or a given) noise model."""

    def __init__(self, device: str = "CPU") -> None:
        self.device = device.upper()
        self._simulators: dict[str, AerSimulator] = {}

    def num_qubits(self, backend_name: str) -> int:
        return fake_backend(backend_name).num_qubits

    def simulator(self, backend_name: str, noise_model: NoiseModel | None) -> AerSimulator:
        """The simulator for a backend's own noise, reused across jobs; a new one otherwise."""
        if noise_model is not None:
            return AerSimulator(noise_model=noise_model, device=self.device)
        sim = self._simulators.get(backend_name)
        if sim is None:
            sim = AerSimulator(noise_model=backend_noise_model(backend_name), device=self.device)
            self._simulators[backend_name] = sim
        return sim

    def sample(
        self,
        backend_name: str,
        pubs: list[SamplerPub],
        *,
        shots: int,
        seed: int | None,
        noise_model: NoiseModel | None,
    ) -> PrimitiveResult:
        sampler = BackendSamplerV2(
            backend=self.simulator(backend_name, noise_model),
            options={"default_shots": shots, "seed_simulator": seed},
        )
        return sampler.run(pubs).result()

    def estimate(
        self,
        backend_name: str,
        pubs: list[EstimatorPub],
        *,
        precision: float,
        seed: int | None,
        noise_model: NoiseModel | None,
    ) -> PrimitiveResult:
        estimator = BackendEstimatorV2(
            backend=self.simulator(backend_name, noise_model),
            options={"default_precision": precision, "seed_simulator": seed},
        )
        return estimator.run(pubs).result()


@cache
def executor_for(device: str) -> AerExecutor:
    """One executor per device per process, so its caches live as long as the process."""
    return AerExecutor(device)
