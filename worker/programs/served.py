"""Backend names as served, mapped to what runs: the device's simulation, or a dry run.

A job's backend may be any name the API serves (``shared/backends.py``): ``fake_sherbrooke``,
its IBM name ``ibm_sherbrooke``, an operator alias, or the mock device ``mock_sherbrooke``. Real
names run on the device's noise model under its primary name (one noise-model cache entry per
device). Mock names get IBM's dry-run answer: the program runs as usual (PUBs decoded and
checked, samplex sampled, results and metadata built the same way) on :class:`DryRunEngine`,
which draws uniformly random bits instead of simulating, and the job bills no usage.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.primitives import PrimitiveResult, SamplerPubResult
from qiskit.primitives.containers import BitArray, DataBin
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub

from qiskit_runtime_server.shared.backends import ServedBackend, default_catalog
from qiskit_runtime_server.shared.errors import NotFound
from qiskit_runtime_server.worker.engines.base import SimulationEngine
from qiskit_runtime_server.worker.engines.estimation import estimate_pub, pauli_terms
from qiskit_runtime_server.worker.engines.report import SimulationReport
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import Defaults

DRY_RUN_DEVICE = "none (dry run)"
DRY_RUN_WARNING = "Dry run on mock backend {name}: the results are random data, nothing was simulated."

Program = Callable[[dict[str, Any], str, SimulationEngine, Defaults], Any]


def served_backend(name: str) -> ServedBackend:
    """The served backend ``name``.

    Raises:
        ProgramError: no backend of that name here (the API checked it, so the worker's
            catalogue or ``QRS_BACKEND_ALIASES`` differs from the API's).
    """
    try:
        return default_catalog().get(name)
    except NotFound:
        raise ProgramError(
            f"Backend {name} is not available on this worker (check that the API and the workers "
            "have the same QRS_BACKEND_ALIASES)."
        ) from None


class DryRunEngine:
    """An :class:`~worker.engines.base.SimulationEngine` that simulates nothing: IBM's mock devices.

    Sampler PUBs get uniformly random bits, one ``BitArray`` per classical register of shape
    ``(*bindings_shape)`` with the PUB's shots; estimator PUBs get ``evs``/``stds`` of the
    broadcast shape, estimated from random bits as the real path estimates them from sampled
    ones (so ``|evs| <= sum |coeff|``). Metadata has the same keys as the simulator's.
    """

    device = DRY_RUN_DEVICE

    def __init__(self, backend: ServedBackend) -> None:
        self._backend = backend
        self.report = SimulationReport()

    processes = 1  # nothing to share out: a dry run simulates nothing

    def begin_job(self, max_seconds: float | None = None, processes: int = 1) -> SimulationReport:
        self.report = SimulationReport()
        return self.report

    def num_qubits(self, backend_name: str) -> int:
        return self._backend.num_qubits

    def _random_bits(self, rng: np.random.Generator, bindings: int, shots: int, bits: int) -> np.ndarray:
        return rng.integers(0, 2, size=(bindings, shots, bits), dtype=np.uint8).astype(bool)

    def sample(
        self, backend_name: str, pubs: list[SamplerPub], *, shots: int, seed: int | None, noise_model: Any
    ) -> PrimitiveResult:
        rng = np.random.default_rng(seed)
        results = []
        for pub in pubs:
            circuit = pub.circuit
            pub_shots = pub.shots if pub.shots is not None else shots
            shape = pub.parameter_values.shape
            bits = self._random_bits(rng, math.prod(shape), pub_shots, circuit.num_clbits)
            data = {}
            for register in circuit.cregs:
                indices = [circuit.find_bit(bit).index for bit in register]
                registered = bits[:, :, indices].reshape(*shape, pub_shots, len(indices))
                data[register.name] = BitArray.from_bool_array(registered, order="little")
            results.append(
                SamplerPubResult(
                    DataBin(**data, shape=shape), metadata={"shots": pub_shots, "circuit_metadata": circuit.metadata}
                )
            )
        return PrimitiveResult(results, metadata={"version": 2})

    def sample_registers(
        self, backend_name: str, pub: SamplerPub, *, shots: int, seed: int | None, noise_model: Any
    ) -> dict[str, np.ndarray]:
        """Random bits ``(*pub shape, shots, register size)`` per classical register."""
        rng = np.random.default_rng(seed)
        pub_shots = pub.shots if pub.shots is not None else shots
        shape = pub.parameter_values.shape
        return {
            register.name: self._random_bits(rng, math.prod(shape), pub_shots, register.size).reshape(
                *shape, pub_shots, register.size
            )
            for register in pub.circuit.cregs
        }

    def estimate(
        self, backend_name: str, pubs: list[EstimatorPub], *, precision: float, seed: int | None, noise_model: Any
    ) -> PrimitiveResult:
        rng = np.random.default_rng(seed)
        gates = self._backend.configuration.get("basis_gates")
        basis_gates = tuple(str(g) for g in gates) if isinstance(gates, list) else ()
        results = []
        for pub in pubs:
            terms = pauli_terms(pub)
            if terms is None:
                raise ProgramError("Observables must be sums of Pauli strings (I, X, Y, Z) on this server.")
            bindings = math.prod(pub.parameter_values.shape)

            def sample(circuit: QuantumCircuit, shots: int, bindings: int = bindings) -> np.ndarray:
                return self._random_bits(rng, bindings, shots, circuit.cregs[-1].size)

            results.append(estimate_pub(pub, terms, basis_gates, sample))
        return PrimitiveResult(results, metadata={"version": 2})


def for_served_backend(program: Program) -> Program:
    """Wrap ``program(params, backend, engine, defaults)`` to take any served backend name.

    Real names run ``program`` on the device's primary name with ``engine``; mock names run
    it on a :class:`DryRunEngine`, mark the output not billable, add ``"dry_run": True`` to a
    ``PrimitiveResult``'s metadata and a line to the job log.

    Raises:
        ProgramError: an unknown backend name, or whatever ``program`` raises.
    """

    @functools.wraps(program)
    def run(params: dict[str, Any], backend: str, engine: SimulationEngine, defaults: Defaults) -> Any:
        served = served_backend(backend)
        if not served.is_mock:
            return program(params, served.simulated, engine, defaults)
        output = program(params, served.simulated, DryRunEngine(served), defaults)
        output.billable = False
        output.warnings.append(DRY_RUN_WARNING.format(name=served.name))
        if isinstance(output.result, PrimitiveResult):
            metadata = {**output.result.metadata, "dry_run": True}
            output.result = PrimitiveResult(list(output.result), metadata=metadata)
        return output

    return run
