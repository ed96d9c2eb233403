"""Simulate only the qubits a circuit uses: compact circuits, reduce noise models.

An ISA circuit for a 127- or 156-qubit device touches a handful of physical qubits, yet Aer
pays for the whole device's noise model on every run (inserting it, serialising it to C++).
Here the circuit is renumbered onto its active qubits (0..k-1, in physical order) and the
backend's noise model is cut down to those qubits with the same numbering. Classical bits and
registers are kept exactly, so measurement results need no mapping back; conditionals and
control flow refer to the same classical bits and keep working.

The reduction reads qiskit-aer's ``NoiseModel`` tables, which have no public accessor;
:func:`reduce_noise_model` returns ``None`` if they ever change shape, and the caller then
simulates the full circuit with the full model (slower, still correct).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from qiskit.circuit import CircuitInstruction, QuantumCircuit, QuantumRegister
from qiskit_aer.noise import NoiseModel, QuantumError
from qiskit_aer.noise.passes import RelaxationNoisePass

_NOT_ACTIVE = frozenset({"barrier"})


def active_qubits(circuit: QuantumCircuit) -> set[int]:
    """Indices of the qubits that any instruction other than a barrier acts on."""
    active: set[int] = set()
    for instruction in circuit.data:
        if instruction.operation.name not in _NOT_ACTIVE:
            active.update(circuit.find_bit(q).index for q in instruction.qubits)
    return active


def compact_circuit(circuit: QuantumCircuit, keep: Sequence[int], others: str = "raise") -> QuantumCircuit:
    """``circuit`` on ``len(keep)`` qubits: physical qubit ``keep[i]`` becomes qubit ``i``.

    Classical bits, registers, parameters, global phase, name and metadata are unchanged.
    Barriers keep only their kept qubits (and vanish if none is kept). With ``others="drop"``,
    instructions on qubits outside ``keep`` are left out (``keep`` is an independent group).

    Raises:
        KeyError: with ``others="raise"``, an instruction acts on a qubit that is not in ``keep``.
    """
    position = {physical: i for i, physical in enumerate(keep)}
    register = QuantumRegister(len(keep), "q")
    compact = QuantumCircuit(register, name=circuit.name, global_phase=circuit.global_phase)
    compact.metadata = circuit.metadata
    compact.add_bits([bit for bit in circuit.clbits])
    for creg in circuit.cregs:
        compact.add_register(creg)
    for var in circuit.iter_input_vars():
        compact.add_input(var)
    qubits = compact.qubits
    for instruction in circuit.data:
        indices = [circuit.find_bit(q).index for q in instruction.qubits]
        if instruction.operation.name in _NOT_ACTIVE:
            kept = [qubits[position[i]] for i in indices if i in position]
            if kept:
                compact._append(CircuitInstruction(instruction.operation.base_class(len(kept)), kept, ()))
            continue
        if others == "drop" and not all(i in position for i in indices):
            continue
        compact._append(
            CircuitInstruction(instruction.operation, [qubits[position[i]] for i in indices], instruction.clbits)
        )
    return compact


Instruction = tuple[str, tuple[int, ...]]
"""An instruction name and the (physical) qubits it acts on, e.g. ``("ecr", (3, 4))``."""

ErrorTransform = Callable[[str, tuple[int, ...], QuantumError], QuantumError]


class FrozenNoiseModel(NoiseModel):  # type: ignore[misc]  # qiskit-aer ships no types
    """A ``NoiseModel`` that is never changed after it is built, so it serialises only once.

    Aer converts the noise model to a dict (and JSON) on every ``run``; for a cached model that
    was most of a small job's time.
    """

    def to_dict(self, serializable: bool = False) -> dict[str, Any]:
        cache: dict[bool, dict[str, Any]] = self.__dict__.setdefault("_frozen_dicts", {})
        if serializable not in cache:
            cache[serializable] = super().to_dict(serializable)
        return cache[serializable]


def used_instructions(circuits: Iterable[QuantumCircuit]) -> frozenset[Instruction]:
    """The (name, qubits) pairs that ``circuits`` apply, inside control-flow blocks too."""
    used: set[Instruction] = set()

    def visit(circuit: QuantumCircuit, qubit_map: Sequence[int]) -> None:
        for instruction in circuit.data:
            qubits = tuple(qubit_map[circuit.find_bit(q).index] for q in instruction.qubits)
            used.add((instruction.operation.name, qubits))
            for block in getattr(instruction.operation, "blocks", ()):
                visit(block, qubits)

    for circuit in circuits:
        visit(circuit, range(circuit.num_qubits))
    return frozenset(used)


def reduce_noise_model(
    model: NoiseModel,
    keep: Sequence[int],
    used: frozenset[Instruction] | None = None,
    transform: ErrorTransform | None = None,
) -> FrozenNoiseModel | None:
    """The part of ``model`` acting only on qubits ``keep``, renumbered to ``0..len(keep)-1``.

    Errors on gates that involve any other qubit are dropped: those gates do not occur in a
    circuit compacted to ``keep``. With ``used`` (physical numbering), only the gate errors of
    those instructions are kept (readout errors of every kept qubit stay: the estimator adds
    its own measurements). ``transform(name, physical_qubits, error)`` may replace each kept
    error by an equivalent one (e.g. its Kraus form). ``None`` when the model has all-qubit
    (default) errors or custom passes this function does not know how to cut down.
    """
    position = {physical: i for i, physical in enumerate(keep)}
    try:
        local_errors = model._local_quantum_errors
        readout_errors = model._local_readout_errors
        default_errors = dict(model._default_quantum_errors)
        default_readout = model._default_readout_error
        passes = list(model._custom_noise_passes)
    except AttributeError:
        return None
    reduced = FrozenNoiseModel(basis_gates=model.basis_gates)
    used_names = None if used is None else {name for name, _ in used}
    for name, error in default_errors.items():
        if used_names is None or name in used_names:
            reduced.add_all_qubit_quantum_error(error, name, warnings=False)
    if default_readout is not None:
        reduced.add_all_qubit_readout_error(default_readout, warnings=False)
    for name, by_qubits in local_errors.items():
        for qubits, error in by_qubits.items():
            if not all(q in position for q in qubits) or (used is not None and (name, qubits) not in used):
                continue
            if transform is not None:
                error = transform(name, qubits, error)
            reduced.add_quantum_error(error, name, [position[q] for q in qubits], warnings=False)
    for qubits, error in readout_errors.items():
        if all(q in position for q in qubits):
            reduced.add_readout_error(error, [position[q] for q in qubits], warnings=False)
    for noise_pass in passes:
        if not isinstance(noise_pass, RelaxationNoisePass):
            return None
        try:
            t1s, t2s, p1s = noise_pass._t1s, noise_pass._t2s, noise_pass._p1s
            reduced._custom_noise_passes.append(
                RelaxationNoisePass(
                    t1s=[float(t1s[q]) for q in keep],
                    t2s=[float(t2s[q]) for q in keep],
                    dt=noise_pass._dt,
                    op_types=noise_pass._ops,
                    excited_state_populations=[float(p1s[q]) for q in keep],
                )
            )
        except (AttributeError, IndexError, TypeError):
            return None
    return reduced


@dataclass
class ErrorTable:
    """The errors of some instructions of a compacted group, read like a ``NoiseModel``'s private
    tables (``qubit_reuse.on_wires`` reads nothing else), without building one: Aer's
    ``add_quantum_error`` checks every error it is given, which costs more than the lookups."""

    basis_gates: list[str]
    _local_quantum_errors: dict[str, dict[tuple[int, ...], QuantumError]]
    _default_quantum_errors: dict[str, QuantumError]
    _local_readout_errors: dict[tuple[int, ...], Any]
    _default_readout_error: Any


def error_table(
    model: NoiseModel, keep: Sequence[int], used: frozenset[Instruction], transform: ErrorTransform | None = None
) -> ErrorTable | None:
    """The errors ``model`` applies to instructions ``used`` (physical numbering) of a group on
    ``keep``, and the readout errors of ``keep``, renumbered to ``0..len(keep)-1``, as
    :func:`reduce_noise_model` keeps them; ``None`` when the model's tables are not readable."""
    position = {physical: i for i, physical in enumerate(keep)}
    try:
        local_errors = model._local_quantum_errors
        readout_errors = model._local_readout_errors
        default_errors = model._default_quantum_errors
        default_readout = model._default_readout_error
    except AttributeError:
        return None
    used_names = {name for name, _ in used}
    local: dict[str, dict[tuple[int, ...], QuantumError]] = {}
    for name, qubits in used:
        error = local_errors.get(name, {}).get(qubits)
        if error is not None and all(q in position for q in qubits):
            if transform is not None:
                error = transform(name, qubits, error)
            local.setdefault(name, {})[tuple(position[q] for q in qubits)] = error
    readouts = {
        tuple(position[q] for q in qubits): error
        for qubits, error in readout_errors.items()
        if all(q in position for q in qubits)
    }
    defaults = {name: error for name, error in default_errors.items() if name in used_names}
    return ErrorTable(list(model.basis_gates), local, defaults, readouts, default_readout)
