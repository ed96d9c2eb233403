"""Noise models in the forms the engines run them, cached per backend.

A group's simulator gets the backend's noise model cut down to the group's qubits and the
instructions it applies (``compaction.py``), in one of three forms: ``"exact"`` (the errors as
``NoiseModel.from_backend`` gives them), ``"kraus"`` (each gate error as one Kraus channel, for
density matrices) or ``"pauli"`` (errors the stabilizer method cannot apply replaced by their
Pauli twirl, ``clifford.py``). Simulators, Kraus forms and twirls for the backend's own noise
model are cached per process; those of a model given with one job live for that job only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from qiskit import QuantumCircuit
from qiskit.quantum_info import Kraus, SuperOp
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, QuantumError

from qiskit_runtime_server.worker.engines.clifford import Approximation, is_pauli_mixture, pauli_twirl
from qiskit_runtime_server.worker.engines.compaction import Instruction, reduce_noise_model
from qiskit_runtime_server.worker.engines.fake_backends import backend_noise_model
from qiskit_runtime_server.worker.engines.single_qubit import NoiseChannels

# Distinct (backend, qubits, instructions) simulators kept per process.
SIMULATOR_CACHE_SIZE = 128


class NoiseForms:
    """The simulators and noise forms of one engine (``AerEngine`` holds one).

    Args:
        device: ``"CPU"`` or ``"GPU"``, for the simulators made here.
        compact: cut noise models down to a group's qubits (else simulators take whole circuits).
        memory_limit_mb: Aer's ``max_memory_mb`` for the simulators made here.
    """

    def __init__(self, device: str, compact: bool, memory_limit_mb: int) -> None:
        self.device = device
        self.compact = compact
        self.memory_limit_mb = memory_limit_mb
        self._simulators: OrderedDict[tuple[object, ...], tuple[AerSimulator, bool]] = OrderedDict()
        self._kraus_errors: dict[tuple[str, str, tuple[int, ...]], QuantumError] = {}
        self._twirled: dict[tuple[str, str, tuple[int, ...]], tuple[QuantumError, float]] = {}
        self._channels: dict[str, NoiseChannels] = {}

    def forget_job(self) -> None:
        """Drop the twirls of the last job's own noise model (cached under source ``""``)."""
        for key in [key for key in self._twirled if key[0] == ""]:
            del self._twirled[key]

    def new_simulator(self, noise_model: NoiseModel) -> AerSimulator:
        return AerSimulator(noise_model=noise_model, device=self.device, max_memory_mb=self.memory_limit_mb)

    def reduce(
        self,
        model: NoiseModel,
        backend_name: str | None,
        keep: Sequence[int],
        used: frozenset[Instruction],
        form: str,
    ) -> NoiseModel | None:
        """``model`` cut down to ``keep`` and ``used``; ``form`` is ``"exact"``, ``"kraus"``
        (gate errors as one Kraus channel each) or ``"pauli"`` (errors the stabilizer method cannot
        apply replaced by their Pauli twirl, see ``clifford.py``)."""
        if form == "exact":
            return reduce_noise_model(model, keep, used)
        source = backend_name or ""
        if form == "pauli":
            # A job's explicit model is cached under source "" for that job only (begin_job).
            twirled = self._twirled

            def twirl(name: str, qubits: tuple[int, ...], error: QuantumError) -> QuantumError:
                if is_pauli_mixture(error):
                    return error
                if (source, name, qubits) not in twirled:
                    approximation = pauli_twirl(error)
                    twirled[(source, name, qubits)] = (approximation.error, approximation.distance)
                return twirled[(source, name, qubits)][0]

            return reduce_noise_model(model, keep, used, twirl)
        return reduce_noise_model(model, keep, used, self.kraus_transform(model, backend_name, used))

    def kraus_transform(
        self, model: NoiseModel, backend_name: str | None, used: frozenset[Instruction]
    ) -> Callable[[str, tuple[int, ...], QuantumError], QuantumError]:
        """Each error of ``used`` in Kraus form: the missing ones converted in one Aer call and
        cached per backend (an explicit model's only for this call)."""
        source = backend_name or ""
        local = getattr(model, "_local_quantum_errors", {})
        cache = self._kraus_errors if backend_name is not None else {}
        missing = [
            (name, qubits, local[name][qubits])
            for name, qubits in used
            if qubits in local.get(name, {}) and (source, name, qubits) not in cache
        ]
        for (name, qubits, _), converted in zip(missing, kraus_forms([e for _, _, e in missing]), strict=True):
            cache[(source, name, qubits)] = converted

        def transform(name: str, qubits: tuple[int, ...], error: QuantumError) -> QuantumError:
            return cache.get((source, name, qubits)) or error

        return transform

    def noise_channels(self, backend_name: str, noise_model: NoiseModel | None) -> NoiseChannels:
        """Single-qubit noise of the backend (cached) or of an explicit model (this job only)."""
        if noise_model is not None:
            return NoiseChannels(noise_model)
        if backend_name not in self._channels:
            self._channels[backend_name] = NoiseChannels(backend_noise_model(backend_name))
        return self._channels[backend_name]

    def simulator(
        self,
        backend_name: str,
        noise_model: NoiseModel | None,
        keep: Sequence[int],
        used: frozenset[Instruction],
        form: str = "exact",
    ) -> tuple[AerSimulator, bool]:
        """The simulator for a group on physical qubits ``keep`` applying ``used``, and whether it
        expects the group compacted to ``len(keep)`` qubits (``False``: the full circuit).
        ``form`` is how its gate errors are given (see :meth:`reduce`).

        The backend's own noise model gives cached simulators; an explicit model (an option of
        this one job) gives a fresh one.
        """
        if noise_model is not None:
            reduced = self.reduce(noise_model, None, keep, used, form) if self.compact else None
            return (
                (self.new_simulator(noise_model), False) if reduced is None else (self.new_simulator(reduced), True)
            )
        key = (backend_name, tuple(keep), used, self.compact, form)
        cached = self._simulators.get(key)
        if cached is None:
            model = backend_noise_model(backend_name)
            reduced = self.reduce(model, backend_name, keep, used, form) if self.compact else None
            cached = (self.new_simulator(reduced if reduced is not None else model), reduced is not None)
            self._simulators[key] = cached
            if len(self._simulators) > SIMULATOR_CACHE_SIZE:
                self._simulators.popitem(last=False)
        else:
            self._simulators.move_to_end(key)
        return cached

    def approximation(
        self, backend_name: str, noise_model: NoiseModel | None, sub: QuantumCircuit, keep: Sequence[int]
    ) -> Approximation:
        """Which errors of a stabilizer run were twirled, and the bound on any expectation value."""
        source = "" if noise_model is not None else backend_name
        errors: dict[tuple[str, tuple[int, ...]], float] = {}
        bound = 0.0
        for instruction in sub.data:
            qubits = tuple(keep[sub.find_bit(q).index] for q in instruction.qubits)
            entry = self._twirled.get((source, instruction.operation.name, qubits))
            if entry is not None:
                errors[(instruction.operation.name, qubits)] = entry[1]
                bound += entry[1]
        return Approximation(errors, bound)


_SUPEROP_SIMULATOR = AerSimulator(method="superop")


def kraus_forms(errors: Sequence[QuantumError]) -> list[QuantumError]:
    """Each error as one Kraus channel, the same channel (to ~1e-10).

    Aer computes the superoperators (one call for all errors): for a two-qubit error of
    ``NoiseModel.from_backend`` (a mixture of ~150 circuits) that takes ~6 ms instead of the
    ~40 ms of composing it in Python with ``quantum_info``.
    """
    if not errors:
        return []
    circuits = []
    for error in errors:
        circuit = QuantumCircuit(error.num_qubits)
        circuit.append(error, range(error.num_qubits))
        circuit.save_superop()
        circuits.append(circuit)
    result = _SUPEROP_SIMULATOR.run(circuits, shots=1).result()
    return [QuantumError(Kraus(SuperOp(result.data(i)["superop"]))) for i in range(len(circuits))]
