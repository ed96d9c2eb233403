"""Backward (causal) light cones: keep only the instructions that can affect what is read out.

A measured bit, or an observable's support at the end of the circuit, depends only on the
instructions in its backward light cone: walking the circuit from the end, an instruction
belongs to the cone when it acts on a qubit already in the cone, or writes a classical bit the
cone reads; its qubits and classical bits then join the cone. Every other instruction acts on
qubits that never again meet the cone, so dropping it leaves the reduced state of the cone's
qubits, and so every outcome the cone decides, unchanged.

This is exact under noise, not only ideally, when every error acts on the qubits of the
instruction it follows and is trace-preserving, as in ``NoiseModel.from_backend`` models
(:func:`~worker.engines.partition.noise_is_local` is the caller's check): a trace-preserving
channel on qubits outside the cone, followed by nothing that couples them back, leaves the
cone's reduced density matrix as it was (``Tr_B[(id_A x E_B)(rho)] = Tr_B[rho]``). Measurements,
resets, delays and conditionals are followed like gates, so mid-circuit measurement and
feed-forward are covered. The cone is causal, not commutation-aware (Qiskit's ``LightCone``
pass also drops gates that commute with the observable): a commuting gate's noise still
changes a noisy expectation value, so only the causal part is exact here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qiskit.circuit import QuantumCircuit

_IGNORED = frozenset({"barrier"})


@dataclass(frozen=True)
class Cone:
    """The backward light cone of some qubits and classical bits at the end of a circuit.

    ``instructions`` are indices into ``circuit.data`` in circuit order; ``qubits`` the indices
    of every qubit those instructions act on (plus the starting qubits).
    """

    instructions: tuple[int, ...]
    qubits: frozenset[int]


def backward_cone(circuit: QuantumCircuit, qubits: Iterable[int] = (), clbits: Iterable[int] = ()) -> Cone | None:
    """The light cone of ``qubits`` (read at the end) and ``clbits`` (their final values).

    Returns ``None`` when the circuit holds classical variables (``Var``/``Store``), whose data
    flow is not followed here: the caller keeps the whole circuit.
    """
    if circuit.num_vars or circuit.num_stretches:
        return None
    live_qubits = set(qubits)
    live_clbits = set(clbits)
    kept: list[int] = []
    qubit_index = {bit: i for i, bit in enumerate(circuit.qubits)}
    clbit_index = {bit: i for i, bit in enumerate(circuit.clbits)}
    data = list(circuit.data)
    for index in range(len(data) - 1, -1, -1):
        instruction = data[index]
        if instruction.name in _IGNORED:
            continue
        on = {qubit_index[q] for q in instruction.qubits}
        bits = {clbit_index[c] for c in instruction.clbits}
        if live_qubits.isdisjoint(on) and live_clbits.isdisjoint(bits):
            continue
        kept.append(index)
        live_qubits |= on
        # Conservative: a kept instruction's classical bits stay live even when it overwrites
        # them, which keeps a few extra instructions and never drops a needed one.
        live_clbits |= bits
    kept.reverse()
    return Cone(tuple(kept), frozenset(live_qubits))


def restrict(circuit: QuantumCircuit, cone: Cone) -> QuantumCircuit:
    """``circuit`` with only the cone's instructions: same qubits, bits, registers, parameters
    in use and metadata, so results need no mapping back."""
    reduced = circuit.copy_empty_like()
    data = circuit.data
    for index in cone.instructions:
        reduced._append(data[index])
    return reduced


def recorded_clbits(circuit: QuantumCircuit) -> list[int]:
    """Indices of the classical bits that some register holds (what a result can show)."""
    return sorted({circuit.find_bit(bit).index for register in circuit.cregs for bit in register})


def reduce_to_recorded(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` restricted to the light cone of its recorded classical bits (itself when
    nothing can be dropped, or when the circuit has classical variables)."""
    cone = backward_cone(circuit, clbits=recorded_clbits(circuit))
    if cone is None or len(cone.instructions) == len(circuit.data):
        return circuit
    return restrict(circuit, cone)
