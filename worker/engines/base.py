"""The interface every simulation engine implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    from qiskit.primitives import PrimitiveResult
    from qiskit.primitives.containers.estimator_pub import EstimatorPub
    from qiskit.primitives.containers.sampler_pub import SamplerPub
    from qiskit_aer.noise import NoiseModel

    from qiskit_runtime_server.worker.engines.report import SimulationReport


class SimulationEngine(Protocol):
    """Runs coerced PUBs for one backend and returns Qiskit's own ``PrimitiveResult``.

    ``noise_model`` is ``None`` for the backend's own noise (the default, as in local testing
    mode) or an explicit model (``options.simulator.noise_model``; an empty model is ideal).
    """

    device: str
    # What the current job's runs did (methods, predicted time, approximations).
    report: SimulationReport
    # Processes the current job's estimator pieces may run in (programs/piece_pool.py).
    processes: int

    def begin_job(self, max_seconds: float | None = None, processes: int = 1) -> SimulationReport: ...

    def sample(
        self,
        backend_name: str,
        pubs: list[SamplerPub],
        *,
        shots: int,
        seed: int | None,
        noise_model: NoiseModel | None,
    ) -> PrimitiveResult: ...

    def sample_registers(
        self,
        backend_name: str,
        pub: SamplerPub,
        *,
        shots: int,
        seed: int | None,
        noise_model: NoiseModel | None,
    ) -> dict[str, np.ndarray]: ...

    def estimate(
        self,
        backend_name: str,
        pubs: list[EstimatorPub],
        *,
        precision: float,
        seed: int | None,
        noise_model: NoiseModel | None,
    ) -> PrimitiveResult: ...

    def num_qubits(self, backend_name: str) -> int: ...
