"""qiskit-aer executor: noisy simulation of a fake backend, on CPU or GPU.

The backend's noise model (``NoiseModel.from_backend`` on the client's fake backend, as local
testing mode builds it) is built once per backend. Each job is compacted to the qubits its
PUBs use (``compaction.py``) and runs on a simulator holding the noise model cut down to those
qubits; both are cached per (backend, qubit set), so a repeated layout costs nothing to set up.
Sampling and estimation use Qiskit's ``BackendSamplerV2``/``BackendEstimatorV2`` over that
``AerSimulator``, the primitives local testing mode uses, so results match it statistically.
"""

from __future__ import annotations

import importlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache

from qiskit.circuit import QuantumCircuit
from qiskit.primitives import BackendEstimatorV2, BackendSamplerV2, PrimitiveResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import Kraus
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, QuantumError
from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

from worker.errors import ProgramError
from worker.executors.compaction import (
    ErrorTransform,
    Instruction,
    active_qubits,
    compact_circuit,
    compact_pauli,
    pauli_support,
    reduce_noise_model,
    used_instructions,
)

# Distinct (backend, qubits, instructions) simulators kept per process.
SIMULATOR_CACHE_SIZE = 128
# Up to this many active qubits Aer simulates noise as a density matrix, where a Kraus channel
# per gate is cheapest; wider circuits run as trajectories, where mixtures of unitaries are.
KRAUS_MAX_QUBITS = 10


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
    """Runs PUBs on ``AerSimulator(device=device)`` with the backend's (or a given) noise model.

    Each job is compacted to its active qubits and runs against a noise model holding only the
    errors of the instructions it applies (plus readout errors of its qubits), on a simulator
    cached per (backend, qubits, instructions). Up to ``KRAUS_MAX_QUBITS`` qubits, where Aer
    simulates noisy circuits as density matrices, each gate error is replaced by its Kraus
    form: the same channel, but one operation instead of a mixture of up to ~150 circuits.

    Args:
        device: ``"CPU"`` or ``"GPU"`` (qiskit-aer-gpu; one GPU per worker process).
        compact: simulate only the qubits the PUBs use (results are identical in law).
    """

    def __init__(self, device: str = "CPU", compact: bool = True) -> None:
        self.device = device.upper()
        self.compact = compact
        self._simulators: OrderedDict[tuple[object, ...], tuple[AerSimulator, bool]] = OrderedDict()
        self._kraus_errors: dict[tuple[str, str, tuple[int, ...]], QuantumError] = {}

    def num_qubits(self, backend_name: str) -> int:
        return fake_backend(backend_name).num_qubits

    def _new_simulator(self, noise_model: NoiseModel) -> AerSimulator:
        return AerSimulator(noise_model=noise_model, device=self.device)

    def _kraus_transform(self, backend_name: str | None) -> ErrorTransform:
        def transform(name: str, qubits: tuple[int, ...], error: QuantumError) -> QuantumError:
            if backend_name is None:
                return QuantumError(Kraus(error))
            key = (backend_name, name, qubits)
            if key not in self._kraus_errors:
                self._kraus_errors[key] = QuantumError(Kraus(error))
            return self._kraus_errors[key]

        return transform

    def _reduce(
        self, model: NoiseModel, backend_name: str | None, keep: Sequence[int], used: frozenset[Instruction]
    ) -> NoiseModel | None:
        transform = self._kraus_transform(backend_name) if len(keep) <= KRAUS_MAX_QUBITS else None
        return reduce_noise_model(model, keep, used, transform)

    def simulator(
        self, backend_name: str, noise_model: NoiseModel | None, circuits: Sequence[QuantumCircuit], active: set[int]
    ) -> tuple[AerSimulator, list[int] | None]:
        """The simulator for a job, and the qubits its circuits must be compacted to (or ``None``).

        The backend's own noise model gives cached simulators; an explicit model (an option of
        this one job) gives a fresh one.
        """
        keep = self._keep({c.num_qubits for c in circuits}, active)
        used = used_instructions(circuits) if keep is not None else frozenset()
        if noise_model is not None:
            reduced = self._reduce(noise_model, None, keep, used) if keep is not None else None
            if reduced is None:
                return self._new_simulator(noise_model), None
            return self._new_simulator(reduced), keep
        key = (backend_name, tuple(keep or ()), used)
        cached = self._simulators.get(key)
        if cached is None:
            model = backend_noise_model(backend_name)
            reduced = self._reduce(model, backend_name, keep, used) if keep is not None else None
            cached = (self._new_simulator(reduced if reduced is not None else model), reduced is not None)
            self._simulators[key] = cached
            if len(self._simulators) > SIMULATOR_CACHE_SIZE:
                self._simulators.popitem(last=False)
        else:
            self._simulators.move_to_end(key)
        sim, compacted = cached
        return sim, keep if compacted else None

    def _keep(self, widths: set[int], active: set[int]) -> list[int] | None:
        if not self.compact or not widths:
            return None
        keep = sorted(active)
        return keep if len(keep) < max(widths) else None

    def sample(
        self,
        backend_name: str,
        pubs: list[SamplerPub],
        *,
        shots: int,
        seed: int | None,
        noise_model: NoiseModel | None,
    ) -> PrimitiveResult:
        circuits = [pub.circuit for pub in pubs]
        active = set().union(*(active_qubits(c) for c in circuits))
        sim, keep = self.simulator(backend_name, noise_model, circuits, active)
        if keep is not None:
            pubs = [
                SamplerPub(compact_circuit(pub.circuit, keep), pub.parameter_values, pub.shots, validate=False)
                for pub in pubs
            ]
        _configure(sim, [pub.circuit for pub in pubs])
        sampler = BackendSamplerV2(backend=sim, options={"default_shots": shots, "seed_simulator": seed})
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
        circuits = [pub.circuit for pub in pubs]
        active: set[int] = set()
        for pub in pubs:
            active |= active_qubits(pub.circuit)
            active |= pauli_support(label for obs in _observable_dicts(pub.observables) for label in obs)
        sim, keep = self.simulator(backend_name, noise_model, circuits, active)
        if keep is not None:
            pubs = [_compact_estimator_pub(pub, keep) for pub in pubs]
        _configure(sim, [pub.circuit for pub in pubs])
        estimator = BackendEstimatorV2(backend=sim, options={"default_precision": precision, "seed_simulator": seed})
        return estimator.run(pubs).result()


# Gates that map Pauli operators to Pauli operators (rz only at multiples of pi/2).
_CLIFFORD_GATES = frozenset(
    {"id", "x", "y", "z", "h", "s", "sdg", "sx", "sxdg", "cx", "cy", "cz", "swap", "ecr", "iswap", "dcx"}
)
_NON_GATES = frozenset({"measure", "reset", "barrier", "delay"})


def is_clifford(circuit: QuantumCircuit) -> bool:
    """Whether every operation is a Clifford gate, a measurement, reset, barrier or delay."""
    for instruction in circuit.data:
        op = instruction.operation
        if op.name in _CLIFFORD_GATES or op.name in _NON_GATES:
            continue
        if op.name == "rz" and not op.is_parameterized() and _quarter_turn(float(op.params[0])):
            continue
        return False
    return True


def _quarter_turn(angle: float) -> bool:
    turns = angle / (math.pi / 2)
    return abs(turns - round(turns)) < 1e-9


def choose_method(sim: AerSimulator, circuits: Sequence[QuantumCircuit], *, noisy: bool) -> str:
    """Aer's own choice while a statevector fits in memory; beyond that, a method that scales.

    Wide ideal Clifford circuits go to the stabilizer method (polynomial in qubits); anything
    else wider than a statevector can hold goes to matrix product states, which handles noise
    and low-entanglement circuits of hundreds of qubits.
    """
    width = max((c.num_qubits for c in circuits), default=0)
    if width <= sim.configuration().n_qubits:
        return "automatic"
    if not noisy and all(is_clifford(c) for c in circuits):
        return "stabilizer"
    return "matrix_product_state"


def _configure(sim: AerSimulator, circuits: Sequence[QuantumCircuit]) -> None:
    """Method and threads for this run of a (shared, cached) simulator.

    Up to ``KRAUS_MAX_QUBITS`` qubits a run is one small density-matrix or statevector pass:
    OpenMP threads only add start-up and spinning (measured: half the CPU time of a noisy Bell
    job), so such runs use one thread and leave the other cores to other workers.
    """
    width = max((c.num_qubits for c in circuits), default=0)
    sim.set_options(
        method=choose_method(sim, circuits, noisy=_noisy(sim)),
        max_parallel_threads=1 if width <= KRAUS_MAX_QUBITS else 0,
    )


def _noisy(sim: AerSimulator) -> bool:
    model = sim.options.noise_model
    return model is not None and not model.is_ideal()


def _observable_dicts(observables: ObservablesArray) -> list[dict[str, float]]:
    flat = observables.ravel().tolist()
    return flat if isinstance(flat, list) else [flat]


def _map_observables(nested: object, keep: Sequence[int]) -> object:
    if isinstance(nested, dict):
        return {compact_pauli(label, keep): coeff for label, coeff in nested.items()}
    assert isinstance(nested, list)
    return [_map_observables(item, keep) for item in nested]


def _compact_estimator_pub(pub: EstimatorPub, keep: Sequence[int]) -> EstimatorPub:
    observables = ObservablesArray(_map_observables(pub.observables.tolist(), keep))
    return EstimatorPub(
        compact_circuit(pub.circuit, keep), observables, pub.parameter_values, pub.precision, validate=False
    )


@cache
def executor_for(device: str) -> AerExecutor:
    """One executor per device per process, so its caches live as long as the process."""
    return AerExecutor(device)
