"""Noisy Clifford circuits at any width: the stabilizer method with Pauli-twirled noise.

A circuit whose gates are Clifford once its parameters are bound (GHZ states, mirror circuits,
stabilizer codes, kicked Ising at its Clifford points, twirled layers) runs on Aer's stabilizer
method in time polynomial in its width. That method takes Pauli errors, resets and readout
errors, but not the amplitude-damping part of thermal relaxation, which
``NoiseModel.from_backend`` gives in Kraus form where ``T2 > T1`` allows it. Each such error is
replaced by its Pauli twirl: the Pauli channel with the same Pauli fidelities
``f_a = Tr(P_a E(P_a)) / 2^n``, i.e. probabilities ``p_b = 4^-n sum_a (-1)^<a,b> f_a`` (the
channel a Pauli-twirled device sees). Errors already made of Paulis and resets stay exact.

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
from qiskit.circuit import QuantumCircuit
from qiskit.circuit.library import RZGate
from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit.quantum_info import Choi, Pauli, SuperOp
from qiskit_aer.noise import QuantumError, pauli_error

# Gates that map Pauli operators to Pauli operators (rz, rx, ry only at multiples of pi/2).
CLIFFORD_GATES = frozenset(
    {"id", "x", "y", "z", "h", "s", "sdg", "sx", "sxdg", "cx", "cy", "cz", "swap", "ecr", "iswap", "dcx"}
)
_QUARTER_TURN_GATES = frozenset({"rz"})
_NON_GATES = frozenset({"measure", "reset", "barrier", "delay"})
# Operations a noise channel may hold and still run on the stabilizer method as it is.
_STABILIZER_ERROR_OPS = frozenset({"id", "x", "y", "z", "pauli", "reset"}) | CLIFFORD_GATES


def is_clifford(circuit: QuantumCircuit) -> bool:
    """Whether every operation is a Clifford gate Aer's stabilizer method runs, a measurement,
    reset, barrier or delay (``rz`` only at bound multiples of pi/2; no control flow)."""
    for instruction in circuit.data:
        op = instruction.operation
        if op.name in CLIFFORD_GATES or op.name in _NON_GATES:
            continue
        if op.name in _QUARTER_TURN_GATES and not op.is_parameterized() and _quarter_turn(float(op.params[0])):
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


def bound_circuits(circuit: QuantumCircuit, values: np.ndarray) -> list[QuantumCircuit]:
    """``circuit`` bound to each row of ``values`` (columns in ``circuit.parameters`` order),
    rotation angles snapped to exact quarter turns (call only for Clifford bindings)."""
    parameters = list(circuit.parameters)
    if not parameters:
        return [_snapped(circuit)]
    return [_snapped(circuit.assign_parameters(dict(zip(parameters, row, strict=True)))) for row in values]


def clifford_at_every_binding(circuit: QuantumCircuit, values: BindingsArray) -> bool:
    """Whether ``circuit`` is Clifford once bound to each of ``values``' bindings."""
    if not circuit.num_parameters:
        return is_clifford(circuit)
    if not _clifford_but_angles(circuit):
        return False
    rows = values.as_array(circuit.parameters).reshape(-1, circuit.num_parameters)
    parameters = list(circuit.parameters)
    return all(is_clifford(circuit.assign_parameters(dict(zip(parameters, row, strict=True)))) for row in rows)


def _clifford_but_angles(circuit: QuantumCircuit) -> bool:
    """Cheap pre-check: every gate is Clifford or a rotation that could be at a Clifford angle."""
    names = CLIFFORD_GATES | _NON_GATES | _QUARTER_TURN_GATES
    return all(instruction.operation.name in names for instruction in circuit.data)


def stabilizer_ready(error: QuantumError) -> bool:
    """Whether the stabilizer method can apply ``error`` as it is (Paulis and resets only)."""
    names = (instruction.operation.name for circuit in error.circuits for instruction in circuit.data)
    return all(name in _STABILIZER_ERROR_OPS for name in names)


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
    superop = SuperOp(error.to_quantumchannel())
    fidelities = []
    for label in _labels(n):
        matrix = Pauli(label).to_matrix()
        evolved = (superop.data @ matrix.reshape(-1, order="F")).reshape(dim, dim, order="F")
        fidelities.append(float(np.real(np.trace(matrix @ evolved))) / dim)
    probabilities = np.clip(_signs(n) @ np.array(fidelities) / 4**n, 0.0, None)
    probabilities /= probabilities.sum()
    twirled = pauli_error([(label, float(p)) for label, p in zip(_labels(n), probabilities, strict=True) if p > 0])
    difference = Choi(superop).data - Choi(SuperOp(twirled.to_quantumchannel())).data
    distance = float(np.abs(np.linalg.eigvalsh((difference + difference.conj().T) / 2)).sum())
    return Twirled(twirled, distance)


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
