"""Exact output law of a qubit that interacts with no other, sampled with numpy: no simulator.

Most qubits of a wide ISA circuit (every qubit of an executor Estimator item) are alone: a few
single-qubit gates, maybe a delay or reset, and a measurement. Their state is a Bloch vector
``(1, x, y, z)``; each instruction followed by its noise (the noise model's quantum error for
that instruction on that qubit, then the relaxation pass's error) is one 4x4 Pauli transfer
matrix, applied to all parameter bindings at once. A measurement splits the state into the two
outcomes with their probabilities (so mid-circuit measurements are exact too), and each
recorded bit passes through the qubit's readout-error matrix, as qiskit-aer applies them.

:func:`compile_single_qubit` returns ``None`` for anything this model does not cover (control
flow, an error on ``measure`` itself, more than :data:`MAX_MEASUREMENTS` measurements, an
instruction without a matrix); the caller then runs that qubit on Aer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit.circuit import CircuitInstruction, Delay, Parameter, ParameterExpression, QuantumCircuit
from qiskit.quantum_info import PTM, SuperOp
from qiskit_aer.noise import NoiseModel, QuantumError

# 2**MAX_MEASUREMENTS outcome branches are tracked exactly.
MAX_MEASUREMENTS = 10

_PAULIS = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=complex)
_RESET = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=float)
_IGNORED = frozenset({"barrier"})


class Unsupported(Exception):
    """The qubit's instructions or noise fall outside what this exact model covers."""


def unitary_ptm(unitaries: np.ndarray) -> np.ndarray:
    """Pauli transfer matrices of single-qubit unitaries: ``(..., 2, 2)`` -> ``(..., 4, 4)`` real.

    ``R[i, j] = Re tr(P_i U P_j U^dagger) / 2`` for the Paulis ``P = (I, X, Y, Z)``.
    """
    unitaries = unitaries[..., None, :, :]
    conjugated = unitaries @ _PAULIS @ np.conj(np.swapaxes(unitaries, -1, -2))
    return np.asarray(0.5 * np.einsum("iba,...jab->...ij", _PAULIS, conjugated).real)


def z_rotation_ptm(theta: np.ndarray) -> np.ndarray:
    """Pauli transfer matrices ``(bindings, 4, 4)`` of ``rz(theta)`` (a rotation of x and y)."""
    cos, sin = np.cos(theta), np.sin(theta)
    matrices = np.zeros((theta.shape[0], 4, 4))
    matrices[:, 0, 0] = matrices[:, 3, 3] = 1.0
    matrices[:, 1, 1] = matrices[:, 2, 2] = cos
    matrices[:, 1, 2] = -sin
    matrices[:, 2, 1] = sin
    return matrices


def channel_ptm(channel: QuantumError | QuantumCircuit) -> np.ndarray:
    """Pauli transfer matrix ``(4, 4)`` of a single-qubit error or error circuit."""
    superop = channel.to_quantumchannel() if isinstance(channel, QuantumError) else SuperOp(channel)
    return np.real(PTM(superop).data)


def instruction_errors(model: NoiseModel, operation: Any, qubits: tuple[int, ...]) -> list[QuantumError]:
    """The errors qiskit-aer applies with ``operation`` on physical ``qubits``, in its order: the
    model's error for that instruction (local, else the all-qubit one of that width), then each
    relaxation pass's.

    Raises:
        Unsupported: a noise pass that does not append its errors.
    """
    name = operation.name
    error = model._local_quantum_errors.get(name, {}).get(qubits)
    if error is None:
        default = model._default_quantum_errors.get(name)
        error = default if default is not None and default.num_qubits == len(qubits) else None
    errors: list[QuantumError] = [] if error is None else [error]
    for noise_pass in model._custom_noise_passes:
        op_types = getattr(noise_pass, "_ops", None)
        if getattr(noise_pass, "_method", None) != "append":
            raise Unsupported("a noise pass that does not append its errors")
        if op_types is not None and not isinstance(operation, op_types):
            continue
        added = noise_pass._func(operation, list(qubits))
        if added is not None:
            errors.append(added)
    return errors


class NoiseChannels:
    """The noise of one ``NoiseModel`` as single-qubit Pauli transfer matrices, cached.

    Mirrors qiskit-aer: an instruction's quantum error is the local one for its qubit if any,
    else the all-qubit one for its name; then each ``RelaxationNoisePass`` appends its error;
    readout errors are the qubit's own, else the all-qubit one.
    """

    def __init__(self, model: NoiseModel | None) -> None:
        self.model = model
        self._after: dict[tuple[object, ...], np.ndarray | None] = {}
        self._readout: dict[int, np.ndarray] = {}

    def after(self, operation: Any, qubit: int) -> np.ndarray | None:
        """The PTM applied after ``operation`` on ``qubit``, or ``None`` for no noise.

        Raises:
            Unsupported: a noise pass this class cannot evaluate, or an error on ``measure``.
        """
        model = self.model
        if model is None:
            return None
        name = operation.name
        duration = (operation.duration, operation.unit) if isinstance(operation, Delay) else None
        key = (name, qubit, duration)
        if key in self._after:
            return self._after[key]
        errors = instruction_errors(model, operation, (qubit,))
        if errors and name == "measure":
            raise Unsupported("noise on measure")
        matrices = [channel_ptm(error) for error in errors]
        combined = None
        for matrix in matrices:
            combined = matrix if combined is None else matrix @ combined
        self._after[key] = combined
        return combined

    def readout(self, qubit: int) -> np.ndarray:
        """``P[true, recorded]`` for a measurement of ``qubit`` (identity without readout error)."""
        if qubit not in self._readout:
            model = self.model
            error = None
            if model is not None:
                error = model._local_readout_errors.get((qubit,), model._default_readout_error)
            matrix = np.eye(2) if error is None else np.asarray(error.probabilities, dtype=float)
            if matrix.shape != (2, 2):
                raise Unsupported("a multi-qubit readout error")
            self._readout[qubit] = matrix
        return self._readout[qubit]


# A step maps the Bloch vectors (branches, bindings, 4) of every branch to new ones.
Step = Callable[[np.ndarray], np.ndarray]


@dataclass
class SingleQubitProgram:
    """The compiled instruction sequence of one lone qubit.

    ``items`` are, in circuit order, either a PTM step ``("ptm", matrix)`` with ``matrix`` of
    shape ``(4, 4)`` or ``(bindings, 4, 4)``, or ``("measure", event_index)``. ``clbits[k]`` is
    the classical bit measurement event ``k`` writes; ``readout`` is ``P[true, recorded]``.
    """

    items: list[tuple[str, Any]]
    clbits: list[int]
    readout: np.ndarray
    bindings: int

    def outcome_law(self) -> tuple[np.ndarray, np.ndarray]:
        """``(weights (branches, bindings), outcomes (branches, events))``: the exact law of
        the true (pre-readout) measurement outcomes for every binding."""
        weights = np.ones((1, self.bindings))
        bloch = np.zeros((1, self.bindings, 4))
        bloch[..., 0] = bloch[..., 3] = 1.0
        outcomes = np.zeros((1, 0), dtype=np.uint8)
        for kind, payload in self.items:
            if kind == "ptm":
                bloch = bloch @ payload.T if payload.ndim == 2 else np.einsum("nij,bnj->bni", payload, bloch)
                continue
            p_one = np.clip((1.0 - bloch[..., 3]) / 2.0, 0.0, 1.0)
            weights = np.concatenate([weights * (1.0 - p_one), weights * p_one])
            collapsed = np.zeros((2, *bloch.shape))
            collapsed[..., 0] = 1.0
            collapsed[0, ..., 3] = 1.0
            collapsed[1, ..., 3] = -1.0
            bloch = collapsed.reshape(-1, *bloch.shape[1:])
            branches = outcomes.shape[0]
            outcomes = np.concatenate(
                [
                    np.column_stack([outcomes, np.zeros(branches, dtype=np.uint8)]),
                    np.column_stack([outcomes, np.ones(branches, dtype=np.uint8)]),
                ]
            )
        return weights, outcomes

    def sample(self, shots: int, rng: np.random.Generator) -> np.ndarray:
        """Recorded bits ``(bindings, shots, len(self.clbits))`` of each measurement event."""
        weights, outcomes = self.outcome_law()
        if not self.clbits:
            return np.zeros((self.bindings, shots, 0), dtype=bool)
        totals = weights.sum(axis=0)
        weights = weights / np.where(totals > 0, totals, 1.0)
        draws = rng.random((self.bindings, shots))
        if weights.shape[0] == 2:
            branch = (draws < weights[1][:, None]).astype(np.intp)
        else:
            cdf = np.cumsum(weights, axis=0).T
            cdf[:, -1] = 1.0
            branch = np.stack([np.searchsorted(cdf[n], draws[n], side="right") for n in range(self.bindings)])
        true = outcomes[branch]
        flip_to_one = self.readout[:, 1][true]
        return np.asarray(rng.random(true.shape) < flip_to_one)


def _parameter_column(expression: Any, values: np.ndarray, columns: Mapping[Parameter, int]) -> np.ndarray | float:
    if isinstance(expression, Parameter):
        return values[:, columns[expression]]
    if isinstance(expression, ParameterExpression):
        parameters = list(expression.parameters)
        if not parameters:
            return float(expression.numeric())
        table = values[:, [columns[p] for p in parameters]]
        return np.array([float(expression.bind(dict(zip(parameters, row, strict=True))).numeric()) for row in table])
    return float(expression)


def _bound_unitaries(operation: Any, values: np.ndarray, columns: Mapping[Parameter, int]) -> np.ndarray:
    """``(bindings, 2, 2)`` matrices of a parameterized single-qubit gate."""
    bindings = values.shape[0]
    params = np.column_stack(
        [np.broadcast_to(_parameter_column(p, values, columns), (bindings,)) for p in operation.params]
    )
    name = operation.name
    if name in ("rz", "p", "u1"):
        theta = params[:, 0]
        matrices = np.zeros((bindings, 2, 2), dtype=complex)
        matrices[:, 0, 0] = np.exp(-0.5j * theta)
        matrices[:, 1, 1] = np.exp(0.5j * theta)
        return matrices
    if name in ("rx", "ry"):
        half = params[:, 0] / 2
        cos, sin = np.cos(half), np.sin(half)
        matrices = np.empty((bindings, 2, 2), dtype=complex)
        matrices[:, 0, 0] = matrices[:, 1, 1] = cos
        if name == "rx":
            matrices[:, 0, 1] = matrices[:, 1, 0] = -1j * sin
        else:
            matrices[:, 0, 1], matrices[:, 1, 0] = -sin, sin
        return matrices
    unique, inverse = np.unique(params, axis=0, return_inverse=True)
    gate = operation.to_mutable()
    table = []
    for row in unique:
        gate.params = [float(v) for v in row]
        table.append(gate.to_matrix())
    return np.asarray(table)[inverse.reshape(-1)]


_FIXED_PTMS: dict[tuple[str, tuple[object, ...]], np.ndarray] = {}


def _fixed_ptm(operation: Any) -> np.ndarray:
    key = (operation.name, tuple(operation.params))
    matrix = _FIXED_PTMS.get(key)
    if matrix is None:
        matrix = unitary_ptm(np.asarray(operation.to_matrix(), dtype=complex))
        if len(_FIXED_PTMS) < 4096:
            _FIXED_PTMS[key] = matrix
    return matrix


def instructions_by_qubit(circuit: QuantumCircuit, qubits: set[int]) -> dict[int, list[CircuitInstruction]]:
    """The instructions (barriers left out) acting on each of ``qubits``, in circuit order."""
    found: dict[int, list[CircuitInstruction]] = {qubit: [] for qubit in qubits}
    for instruction in circuit.data:
        if instruction.operation.name in _IGNORED:
            continue
        for bit in instruction.qubits:
            bucket = found.get(circuit.find_bit(bit).index)
            if bucket is not None:
                bucket.append(instruction)
    return found


def compile_single_qubit(
    circuit: QuantumCircuit,
    qubit: int,
    instructions: list[CircuitInstruction],
    noise: NoiseChannels,
    values: np.ndarray,
    columns: Mapping[Parameter, int],
) -> SingleQubitProgram | None:
    """The exact program of lone ``qubit`` of ``circuit`` for parameter ``values`` ``(bindings, P)``.

    ``instructions`` are the ones acting on the qubit (:func:`instructions_by_qubit`);
    ``columns`` maps each circuit parameter to its column of ``values``. ``None`` when the
    qubit's instructions or noise are not covered (see the module docstring).
    """
    bindings = values.shape[0]
    items: list[tuple[str, Any]] = []
    clbits: list[int] = []
    try:
        for instruction in instructions:
            operation = instruction.operation
            if len(instruction.qubits) != 1 or getattr(operation, "blocks", None):
                return None
            name = operation.name
            if name == "measure":
                if len(clbits) == MAX_MEASUREMENTS:
                    return None
                noise.after(operation, qubit)  # raises for noise this model cannot place
                items.append(("measure", len(clbits)))
                clbits.append(circuit.find_bit(instruction.clbits[0]).index)
                continue
            if name == "reset":
                matrix = _RESET
            elif name == "delay":
                matrix = None
            elif operation.is_parameterized() and name == "rz":
                angle = _parameter_column(operation.params[0], values, columns)
                matrix = z_rotation_ptm(np.broadcast_to(angle, (bindings,)))
            elif operation.is_parameterized():
                matrix = unitary_ptm(_bound_unitaries(operation, values, columns))
            elif hasattr(operation, "to_matrix") and not instruction.clbits:
                matrix = _fixed_ptm(operation)
            else:
                return None
            error = noise.after(operation, qubit)
            if error is not None:
                matrix = error if matrix is None else error @ matrix
            if matrix is not None:
                _append_ptm(items, matrix)
        readout = noise.readout(qubit)
    except Exception:  # anything unexpected: Aer simulates this qubit instead
        return None
    return SingleQubitProgram(items, clbits, readout, bindings)


def _append_ptm(items: list[tuple[str, Any]], matrix: np.ndarray) -> None:
    """Fuse consecutive PTMs into one, so a run of gates costs one product per binding."""
    if items and items[-1][0] == "ptm":
        items[-1] = ("ptm", matrix @ items[-1][1])
    else:
        items.append(("ptm", matrix))
