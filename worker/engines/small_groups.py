"""Exact output law of a small group of qubits (2 or 3), for every binding at once, with numpy.

A CHSH sweep, a Bell pair or a twirled two-qubit experiment on a 127-qubit device is one group
of two noisy qubits with hundreds or thousands of bindings (angles x twirling randomizations).
Aer spends about a millisecond per binding on such a run; here the whole PUB is one batched
density matrix ``rho`` of shape ``(bindings, 2^k, 2^k)``: each instruction is ``U rho U^+`` with
``U`` per binding for parameterized gates, each of its errors ``sum_i K_i rho K_i^+`` with the
error's canonical Kraus operators, in the order qiskit-aer applies them (the noise model's error
for that instruction on those physical qubits, then each relaxation pass's error; errors on
``measure`` before it). Measurements must come last on their qubits; the law of the true
outcomes is the diagonal of ``rho``, and each recorded bit passes through its qubit's readout
matrix, as Aer applies it.

:func:`compile_small_group` returns ``None`` for anything it does not cover (control flow, a
qubit measured twice or measured before another of its gates, an instruction without a
matrix); the caller then runs the group on Aer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from qiskit.circuit import CircuitInstruction, Delay, Parameter, QuantumCircuit
from qiskit.quantum_info import Operator
from qiskit_aer.noise import QuantumError

from qiskit_runtime_server.worker.engines.clifford import row_major_superop, superop_choi
from qiskit_runtime_server.worker.engines.single_qubit import (
    NoiseChannels,
    Unsupported,
    _bound_unitaries,
    instruction_errors,
)

# The widest group run here: 2^k x 2^k density matrices, 4^k-dimensional Kraus maps.
MAX_QUBITS = 4
# predicted_seconds: per step or operator, and per multiply-add of the batched products.
SMALL_GROUP_SECONDS_PER_STEP = 1.5e-5
SMALL_GROUP_SECONDS_PER_UNIT = 2e-9
_RESET_KRAUS = (np.array([[1, 0], [0, 0]], dtype=complex), np.array([[0, 1], [0, 0]], dtype=complex))


@cache
def _layout(qargs: tuple[int, ...], num_qubits: int) -> tuple[np.ndarray, np.ndarray]:
    """For embedding a gate on ``qargs`` into ``num_qubits`` qubits (little-endian): the gate's
    row index of each full row, and which (row, column) pairs agree on the other qubits."""
    dim = 2**num_qubits
    full = np.arange(dim)
    gate_index = sum(((full >> q) & 1) << position for position, q in enumerate(qargs))
    mask_others = sum(1 << q for q in range(num_qubits) if q not in qargs)
    others = full & mask_others
    return np.asarray(gate_index), others[:, None] == others[None, :]


def embed(matrices: np.ndarray, qargs: tuple[int, ...], num_qubits: int) -> np.ndarray:
    """``matrices`` ``(..., 2^g, 2^g)`` acting on ``qargs`` as ``(..., 2^k, 2^k)`` operators."""
    index, same = _layout(qargs, num_qubits)
    return np.asarray(matrices[..., index[:, None], index[None, :]] * same)


def kraus_operators(error: QuantumError) -> list[np.ndarray]:
    """Canonical Kraus operators of ``error`` on its own qubits (from its Choi matrix)."""
    dim = 2**error.num_qubits
    values, vectors = np.linalg.eigh(superop_choi(row_major_superop(error), dim))
    return [np.sqrt(value) * vectors[:, i].reshape(dim, dim) for i, value in enumerate(values) if value > 1e-14]


@dataclass
class SmallGroupProgram:
    """The compiled instructions of one small group: a list of steps on the batched density
    matrix, the measured local qubits with their classical bits, and each one's readout matrix
    ``P[true, recorded]``."""

    steps: list[tuple[str, Any]]
    measured: list[tuple[int, int]]
    readout: list[np.ndarray]
    num_qubits: int
    bindings: int

    def probabilities(self) -> np.ndarray:
        """Law of the recorded outcomes ``(bindings, 2^m)`` over the measured qubits (outcome
        index bit ``j`` = measurement ``j``), readout errors included."""
        dim = 2**self.num_qubits
        rho = np.zeros((self.bindings, dim, dim), dtype=complex)
        rho[:, 0, 0] = 1.0
        for kind, payload in self.steps:
            if kind == "unitary":
                rho = payload @ rho @ np.conj(np.swapaxes(payload, -1, -2))
            else:
                rho = sum(k @ rho @ k.conj().T for k in payload)
        diagonal = np.clip(np.real(np.einsum("bii->bi", rho)), 0.0, None)
        full = np.arange(dim)
        law = np.zeros((self.bindings, 2 ** len(self.measured)))
        outcome = sum(((full >> q) & 1) << j for j, (q, _) in enumerate(self.measured))
        np.add.at(law.T, np.asarray(outcome), diagonal.T)
        for j, readout in enumerate(self.readout):
            law = _apply_readout(law, readout, j, len(self.measured))
        totals = law.sum(axis=1, keepdims=True)
        return law / np.where(totals > 0, totals, 1.0)

    def predicted_seconds(self, shots: int) -> float:
        """Predicted time (s) of :meth:`sample`: a fixed cost per step and per Kraus operator,
        plus the batched products and the draws (measured here: about 15 us per step and
        2 ns per amplitude product)."""
        dim = 2**self.num_qubits
        operators = sum(1 if kind == "unitary" else len(payload) for kind, payload in self.steps)
        return float(
            SMALL_GROUP_SECONDS_PER_STEP * (len(self.steps) + operators)
            + SMALL_GROUP_SECONDS_PER_UNIT * (operators * self.bindings * dim**3 + self.bindings * shots * dim)
        )

    def sample(self, shots: int, rng: np.random.Generator, num_clbits: int) -> np.ndarray:
        """Recorded bits ``(bindings, shots, num_clbits)`` (the group's clbits, circuit order)."""
        law = self.probabilities()
        cdf = np.cumsum(law, axis=1)
        cdf[:, -1] = 1.0
        draws = rng.random((self.bindings, shots))
        outcomes = (draws[:, :, None] >= cdf[:, None, :-1]).sum(axis=2)
        bits = np.zeros((self.bindings, shots, num_clbits), dtype=bool)
        for j, (_, clbit) in enumerate(self.measured):
            bits[:, :, clbit] = (outcomes >> j) & 1
        return bits


def _apply_readout(law: np.ndarray, readout: np.ndarray, bit: int, width: int) -> np.ndarray:
    """Pass bit ``bit`` of the outcome law ``(bindings, 2^width)`` through ``P[true, recorded]``."""
    shaped = law.reshape(law.shape[0], *([2] * width))
    axis = width - bit  # axis 1 is the highest bit
    moved = np.moveaxis(shaped, axis, -1) @ readout
    return np.asarray(np.moveaxis(moved, -1, axis).reshape(law.shape))


def compile_small_group(
    circuit: QuantumCircuit,
    qubits: tuple[int, ...],
    clbits: tuple[int, ...],
    noise: NoiseChannels,
    values: np.ndarray,
    columns: Mapping[Parameter, int],
) -> SmallGroupProgram | None:
    """The exact program of the group of physical ``qubits`` of ``circuit`` (which interacts
    with nothing else) for parameter ``values`` ``(bindings, P)``; ``clbits`` are the group's
    classical bits (the program's bits come in that order). ``None`` when not covered."""
    if not 2 <= len(qubits) <= MAX_QUBITS:
        return None
    local = {q: i for i, q in enumerate(qubits)}
    position = {c: i for i, c in enumerate(clbits)}
    qubit_index = {bit: i for i, bit in enumerate(circuit.qubits)}
    clbit_index = {bit: i for i, bit in enumerate(circuit.clbits)}
    bindings = values.shape[0]
    k = len(qubits)
    steps: list[tuple[str, Any]] = []
    measured: list[tuple[int, int]] = []
    readout: list[np.ndarray] = []
    done: set[int] = set()
    try:
        for instruction in circuit.data:
            on = tuple(qubit_index[q] for q in instruction.qubits)
            if instruction.name == "barrier" or not any(q in local for q in on):
                continue
            targets = tuple(local[q] for q in on)
            if done.intersection(targets) or getattr(instruction.operation, "blocks", None):
                return None  # something after a measurement, or control flow
            if instruction.name == "measure":
                _add_errors(steps, noise, instruction, on, targets, k)  # Aer: before the measurement
                done.add(targets[0])
                measured.append((targets[0], position[clbit_index[instruction.clbits[0]]]))
                readout.append(noise.readout(on[0]))
                continue
            if instruction.name == "quantum_channel":  # an error stated in the circuit (qubit_reuse.py)
                steps.append(("kraus", _stated_error(instruction.operation._quantum_error, targets, k)))
                continue
            if instruction.name == "reset":
                steps.append(("kraus", [embed(m, targets, k) for m in _RESET_KRAUS]))
            elif instruction.name != "delay":
                steps.append(("unitary", _unitary(instruction, targets, k, values, columns)))
            _add_errors(steps, noise, instruction, on, targets, k)
    except Unsupported:
        return None
    except Exception:  # anything unexpected: Aer simulates the group instead
        return None
    return SmallGroupProgram(steps, measured, readout, k, bindings)


def _unitary(
    instruction: CircuitInstruction,
    targets: tuple[int, ...],
    k: int,
    values: np.ndarray,
    columns: Mapping[Parameter, int],
) -> np.ndarray:
    operation = instruction.operation
    if instruction.clbits:
        raise Unsupported("a gate with classical bits")
    if operation.is_parameterized():
        return embed(_bound_unitaries(operation, values, columns), targets, k)
    return _fixed(operation.name, tuple(float(p) for p in operation.params), operation, targets, k)


_FIXED: dict[tuple[object, ...], np.ndarray] = {}


def _fixed(name: str, params: tuple[float, ...], operation: Any, targets: tuple[int, ...], k: int) -> np.ndarray:
    key = (name, params, targets, k)
    matrix = _FIXED.get(key)
    if matrix is None:
        matrix = embed(Operator(operation).data, targets, k)
        if len(_FIXED) < 4096:
            _FIXED[key] = matrix
    return matrix


def _stated_error(error: QuantumError, targets: tuple[int, ...], k: int) -> list[np.ndarray]:
    """Embedded Kraus operators of an error instruction (the engine's Kraus-form errors are
    shared by every circuit of a backend, so they are memoised by the error object)."""
    return _memoised((id(error), targets, k), error, error, targets, k)


def _add_errors(
    steps: list[tuple[str, Any]],
    noise: NoiseChannels,
    instruction: CircuitInstruction,
    physical: tuple[int, ...],
    targets: tuple[int, ...],
    k: int,
) -> None:
    """Append the errors qiskit-aer applies with ``instruction`` on ``physical`` qubits
    (:func:`~worker.engines.single_qubit.instruction_errors`), memoised per noise model."""
    model = noise.model
    if model is None:
        return
    operation = instruction.operation
    duration = (operation.duration, operation.unit) if isinstance(operation, Delay) else None
    for position, error in enumerate(instruction_errors(model, operation, physical)):
        key = (id(model), operation.name, physical, targets, k, duration, position)
        steps.append(("kraus", _memoised(key, model, error, targets, k)))


# Embedded Kraus operators by key (ids of the model or error they came from), with that owner:
# an id is only reused once its object is gone, and the identity check notices.
_KRAUS: dict[tuple[object, ...], tuple[object, list[np.ndarray]]] = {}


def _memoised(
    key: tuple[object, ...], owner: object, error: QuantumError, targets: tuple[int, ...], k: int
) -> list[np.ndarray]:
    cached = _KRAUS.get(key)
    if cached is None or cached[0] is not owner:
        cached = (owner, [embed(m, targets, k) for m in kraus_operators(error)])
        if len(_KRAUS) > 8192:
            _KRAUS.clear()
        _KRAUS[key] = cached
    return cached[1]
