"""Noisy Clifford circuits at any width: the stabilizer method with Pauli-twirled noise.

A circuit whose gates are Clifford once its parameters are bound (GHZ states, mirror circuits,
stabilizer codes, kicked Ising at its Clifford points, twirled layers) runs on Aer's stabilizer
method in time polynomial in its width, sampled with Stim's Pauli frames (``stim_sampler.py``),
which take Pauli channels and readout errors only. Thermal relaxation is not one:
``NoiseModel.from_backend`` gives it in Kraus form where ``T2 > T1`` allows it, else as a mixture
of identity, ``Z`` and a reset. Each such error is replaced by its Pauli twirl: the Pauli
channel with the same Pauli fidelities ``f_a = Tr(P_a E(P_a)) / 2^n``, i.e. probabilities
``p_b = 4^-n sum_a (-1)^<a,b> f_a`` (the channel a Pauli-twirled device sees). Errors already
made of Paulis stay exact.

Every replaced error has a stated distance: the trace norm of the difference of the two
channels' Choi matrices, an upper bound on their diamond-norm distance. An expectation value of
a Pauli (or any observable of norm at most 1) then moves by at most the sum of these distances
over the noisy instructions the run applies (:class:`Approximation`), which the result metadata
and the job log report.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from qiskit.circuit import Instruction, QuantumCircuit
from qiskit.circuit.library import RZGate
from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit.quantum_info import Operator, Pauli, SuperOp
from qiskit_aer.noise import QuantumError, pauli_error

# Gates that map Pauli operators to Pauli operators (rz, rx, ry only at multiples of pi/2).
CLIFFORD_GATES = frozenset(
    {"id", "x", "y", "z", "h", "s", "sdg", "sx", "sxdg", "cx", "cy", "cz", "swap", "ecr", "iswap", "dcx"}
)
_QUARTER_TURN_GATES = frozenset({"rz"})
_NON_GATES = frozenset({"measure", "reset", "barrier", "delay"})
# Operations of a noise channel that is a mixture of Paulis (kept exact on the stabilizer path).
_PAULI_ERROR_OPS = frozenset({"id", "x", "y", "z", "pauli"})


def is_clifford(circuit: QuantumCircuit) -> bool:
    """Whether every operation is a Clifford gate Aer's stabilizer method runs, a measurement,
    reset, barrier or delay (``rz`` only at bound multiples of pi/2; no control flow)."""
    # CircuitInstruction.name/params: reading .operation builds a Python gate object each time.
    for instruction in circuit.data:
        name = instruction.name
        if name in CLIFFORD_GATES or name in _NON_GATES:
            continue
        if (
            name in _QUARTER_TURN_GATES
            and not instruction.is_parameterized()
            and _quarter_turn(float(instruction.params[0]))
        ):
            continue
        return False
    return True


# Angles within this many quarter turns of one count as that quarter turn: twirling samplers
# hand over single-precision angles (seen: 5.6e-8 off), and a rotation 1e-6 rad off changes
# outcome probabilities by ~1e-12, far below any shot noise.
QUARTER_TURN_TOLERANCE = 1e-6


def _quarter_turn(angle: float) -> bool:
    turns = angle / (math.pi / 2)
    return abs(turns - round(turns)) < QUARTER_TURN_TOLERANCE


def _snapped(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` with each bound ``rz`` angle set to its exact quarter turn (the stabilizer
    method takes only exact Clifford angles)."""
    snapped = circuit.copy_empty_like()
    for instruction in circuit.data:
        op = instruction.operation
        if op.name in _QUARTER_TURN_GATES and not op.is_parameterized():
            turns = round(float(op.params[0]) / (math.pi / 2))
            instruction = instruction.replace(operation=RZGate(turns * math.pi / 2))
        snapped._append(instruction)
    return snapped


def snapped_circuits(circuits: list[QuantumCircuit]) -> list[QuantumCircuit]:
    """Bound Clifford ``circuits`` with rotation angles snapped to exact quarter turns (what Aer's
    stabilizer method takes)."""
    return [_snapped(circuit) for circuit in circuits]


def clifford_bindings(circuit: QuantumCircuit, values: np.ndarray) -> list[QuantumCircuit] | None:
    """``circuit`` bound to each row of ``values`` (columns in ``circuit.parameters`` order), or
    ``None`` unless every bound circuit is Clifford (:func:`is_clifford`). One circuit when
    ``circuit`` has no parameters."""
    if not circuit.num_parameters:
        return [circuit] if is_clifford(circuit) else None
    if not _clifford_but_angles(circuit):
        return None
    parameters = list(circuit.parameters)
    bound = []
    for row in values:
        candidate = circuit.assign_parameters(dict(zip(parameters, row, strict=True)))
        if not is_clifford(candidate):
            return None
        bound.append(candidate)
    return bound


def clifford_at_every_binding(circuit: QuantumCircuit, values: BindingsArray) -> bool:
    """Whether ``circuit`` is Clifford once bound to each of ``values``' bindings."""
    if not circuit.num_parameters:
        return is_clifford(circuit)
    rows = values.as_array(circuit.parameters).reshape(-1, circuit.num_parameters)
    return clifford_bindings(circuit, rows) is not None


def _clifford_but_angles(circuit: QuantumCircuit) -> bool:
    """Cheap pre-check: every gate is Clifford or a rotation that could be at a Clifford angle."""
    names = CLIFFORD_GATES | _NON_GATES | _QUARTER_TURN_GATES
    return all(instruction.name in names for instruction in circuit.data)


def is_pauli_mixture(error: QuantumError) -> bool:
    """Whether ``error`` is a mixture of Paulis (the stabilizer path applies it as it is)."""
    names = (instruction.operation.name for circuit in error.circuits for instruction in circuit.data)
    return all(name in _PAULI_ERROR_OPS for name in names)


@cache
def _labels(num_qubits: int) -> tuple[str, ...]:
    return tuple("".join(p) for p in itertools.product("IXYZ", repeat=num_qubits))


@cache
def _signs(num_qubits: int) -> np.ndarray:
    paulis = [Pauli(label) for label in _labels(num_qubits)]
    return np.array([[1.0 if a.commutes(b) else -1.0 for b in paulis] for a in paulis])


@dataclass(frozen=True)
class Twirled:
    """A Pauli-twirled error and its distance from the original (Choi trace norm, an upper bound
    on the diamond norm of the difference)."""

    error: QuantumError
    distance: float


def pauli_twirl(error: QuantumError) -> Twirled:
    """The Pauli twirl of ``error`` (same Pauli fidelities) and its distance from it."""
    n = error.num_qubits
    dim = 2**n
    superop = row_major_superop(error)
    paulis = _pauli_matrices(n)
    # f_a = Tr(P_a E(P_a)) / d with row-major vectorisation: Tr(A B) = vec(A^T) . vec(B).
    evolved = paulis.reshape(len(paulis), -1) @ superop.T
    fidelities = np.real(np.einsum("ak,ak->a", paulis.transpose(0, 2, 1).reshape(len(paulis), -1), evolved)) / dim
    probabilities = np.clip(_signs(n) @ fidelities / 4**n, 0.0, None)
    probabilities /= probabilities.sum()
    twirled = pauli_error([(label, float(p)) for label, p in zip(_labels(n), probabilities, strict=True) if p > 0])
    twirled_superop = np.einsum("b,bij,bkl->ikjl", probabilities, paulis, paulis.conj()).reshape(dim * dim, -1)
    choi = superop_choi(superop - twirled_superop, dim)
    distance = float(np.abs(np.linalg.eigvalsh((choi + choi.conj().T) / 2)).sum())
    return Twirled(twirled, distance)


@cache
def _pauli_matrices(num_qubits: int) -> np.ndarray:
    return np.array([Pauli(label).to_matrix() for label in _labels(num_qubits)])


def superop_choi(superop: np.ndarray, dim: int) -> np.ndarray:
    """The Choi matrix ``sum_ij E(|i><j|) (x) |i><j|`` of a row-major superoperator."""
    return superop.reshape(dim, dim, dim, dim).transpose(0, 2, 1, 3).reshape(dim * dim, dim * dim)


_RESET_KRAUS = (np.array([[1, 0], [0, 0]], dtype=complex), np.array([[0, 1], [0, 0]], dtype=complex))


def row_major_superop(error: QuantumError) -> np.ndarray:
    """``error``'s channel as a row-major superoperator (``vec(K rho K^+) = (K (x) K*) vec(rho)``),
    built from its circuits' Kraus operators (much faster than ``to_quantumchannel`` for the
    one- and two-qubit errors of a backend's noise model)."""
    n = error.num_qubits
    dim = 2**n
    if n > 2:
        data = SuperOp(error.to_quantumchannel()).data  # column-major: convert
        return np.asarray(data.reshape(dim, dim, dim, dim).transpose(1, 0, 3, 2).reshape(dim * dim, -1))
    total = np.zeros((dim * dim, dim * dim), dtype=complex)
    for circuit, probability in zip(error.circuits, error.probabilities, strict=True):
        channel: np.ndarray | None = None
        for instruction in circuit.data:
            qargs = tuple(circuit.find_bit(q).index for q in instruction.qubits)
            step = _operation_superop(instruction.operation, qargs, n)
            channel = step if channel is None else step @ channel
        total += probability * (np.eye(dim * dim) if channel is None else channel)
    return total


def _operation_superop(operation: Instruction, qargs: tuple[int, ...], num_qubits: int) -> np.ndarray:
    """One error operation's row-major superoperator on ``num_qubits`` qubits (memoised: a
    backend's errors repeat the same few Paulis, resets and relaxation Kraus maps)."""
    params = tuple(np.asarray(p).tobytes() if isinstance(p, np.ndarray) else repr(p) for p in operation.params)
    key = (operation.name, params, qargs, num_qubits)
    cached = _SUPEROPS.get(key)
    if cached is None:
        dim = 2**num_qubits
        cached = np.zeros((dim * dim, dim * dim), dtype=complex)
        for kraus in _kraus(operation):
            k = _embed(kraus, qargs, num_qubits)
            cached += (k[:, None, :, None] * k.conj()[None, :, None, :]).reshape(dim * dim, dim * dim)
        if len(_SUPEROPS) > 4096:
            _SUPEROPS.clear()
        _SUPEROPS[key] = cached
    return cached


_SUPEROPS: dict[tuple[object, ...], np.ndarray] = {}


def _kraus(operation: Instruction) -> list[np.ndarray]:
    if operation.name == "reset":
        return list(_RESET_KRAUS)
    if operation.name == "kraus":
        return [np.asarray(k, dtype=complex) for k in operation.params]
    return [Operator(operation).data]


_SWAP = np.eye(4)[[0, 2, 1, 3]]


def _embed(matrix: np.ndarray, qargs: tuple[int, ...], num_qubits: int) -> np.ndarray:
    """``matrix`` acting on ``qargs`` of ``num_qubits`` (at most 2) qubits, little-endian."""
    if num_qubits == len(qargs):
        return matrix if qargs == tuple(range(num_qubits)) else _SWAP @ matrix @ _SWAP
    identity = np.eye(2)
    return np.kron(identity, matrix) if qargs == (0,) else np.kron(matrix, identity)


@dataclass
class Approximation:
    """What a stabilizer run approximated: ``errors`` replaced (instruction, physical qubits) with
    their distances, and ``bound``, the sum of distances over the instructions applied, which
    bounds the change of any expectation value of norm at most 1."""

    errors: dict[tuple[str, tuple[int, ...]], float]
    bound: float

    @property
    def largest(self) -> float:
        return max(self.errors.values(), default=0.0)
