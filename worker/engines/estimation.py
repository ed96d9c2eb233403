"""Expectation values from sampled measurements, as Qiskit's ``BackendEstimatorV2`` computes them.

Local testing mode runs ``EstimatorV2`` as ``BackendEstimatorV2`` on the fake backend: Pauli
terms are grouped into qubit-wise commuting sets, each set is measured in its basis (basis
changes translated to the backend's single-qubit gates, so they carry its noise) with
``ceil(1 / precision**2)`` shots, and ``stds`` is ``sum(|coeff| * sqrt(var)) / sqrt(shots)``.
This module does the same, but measures each basis once for all parameter bindings of the PUB
through the worker's sampler (independent qubit groups, one Aer call per group), instead of one
bound circuit per binding and basis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
from qiskit.circuit import ClassicalRegister, QuantumCircuit
from qiskit.primitives import PubResult
from qiskit.primitives.containers import DataBin
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.quantum_info import Pauli, PauliList
from qiskit.transpiler.passes import Optimize1qGatesDecomposition

# Samples (bindings, shots, measured qubits) of ``circuit`` measured into its last register.
SampleFn = Callable[[QuantumCircuit, int], np.ndarray]

_BASIS_REGISTER = "__qrs_basis"


def pauli_terms(pub: EstimatorPub) -> list[dict[str, float]] | None:
    """The PUB's observables as ``{pauli_label: coefficient}`` dicts (flattened), or ``None`` when a
    term is not a Pauli string (projector terms of a ``SparseObservable``)."""
    flat = pub.observables.ravel().tolist()
    terms = flat if isinstance(flat, list) else [flat]
    for term in terms:
        if any(set(label) - set("IXYZ") for label in term):
            return None
    return terms


@cache
def _basis_change(basis_gates: tuple[str, ...], axis: str) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """Gates (name, params) that rotate ``axis`` ("X" or "Y") onto Z, in ``basis_gates``."""
    circuit = QuantumCircuit(1)
    if axis == "Y":
        circuit.sdg(0)
    circuit.h(0)
    if basis_gates:
        circuit = Optimize1qGatesDecomposition(basis=list(basis_gates))(circuit)
    return tuple((i.operation.name, tuple(float(p) for p in i.operation.params)) for i in circuit.data)


def measurement_circuit(circuit: QuantumCircuit, basis: Pauli, basis_gates: Sequence[str]) -> QuantumCircuit:
    """``circuit`` followed by the basis changes of ``basis`` and measurements of its support,
    into a new register (bit ``i``: the ``i``-th qubit of the support, ascending)."""
    support = [int(q) for q in np.flatnonzero(basis.z | basis.x)]
    measured = circuit.copy_empty_like()
    measured.compose(circuit, inplace=True, copy=False)
    register = ClassicalRegister(len(support), _BASIS_REGISTER)
    measured.add_register(register)
    gates = tuple(sorted(basis_gates))
    for bit, qubit in enumerate(support):
        if basis.x[qubit]:
            for name, params in _basis_change(gates, "Y" if basis.z[qubit] else "X"):
                getattr(measured, name)(*params, qubit)
        measured.measure(qubit, register[bit])
    return measured


def estimate_pub(
    pub: EstimatorPub, terms: list[dict[str, float]], basis_gates: Sequence[str], sample: SampleFn
) -> PubResult:
    """``evs`` and ``stds`` of one PUB, shaped like the broadcast of its bindings and observables.

    ``sample(circuit, shots)`` returns booleans ``(bindings, shots, bits)`` for the PUB's bindings
    (flattened in C order) of ``circuit``'s last register.
    """
    shots = math.ceil(1.0 / pub.precision**2)
    num_qubits = pub.circuit.num_qubits
    labels = sorted({label for term in terms for label in term if set(label) != {"I"}})
    expvals: dict[str, np.ndarray] = {}
    variances: dict[str, np.ndarray] = {}
    if labels:
        for group in PauliList(labels).group_commuting(qubit_wise=True):
            basis = Pauli((np.logical_or.reduce(group.z), np.logical_or.reduce(group.x)))
            support = np.flatnonzero(basis.z | basis.x)
            bits = sample(measurement_circuit(pub.circuit, basis, basis_gates), shots)
            for pauli in group:
                mask = (pauli.z | pauli.x)[support]
                signs = 1.0 - 2.0 * (np.count_nonzero(bits[..., mask], axis=-1) % 2)
                mean = signs.mean(axis=-1)
                label = pauli.to_label()
                expvals[label] = mean
                variances[label] = 1.0 - mean**2
    values_shape = pub.parameter_values.shape
    bindings = int(np.prod(values_shape, dtype=int))
    identity = "I" * num_qubits
    shape = np.broadcast_shapes(values_shape, pub.observables.shape)
    binding_index = np.broadcast_to(np.arange(bindings).reshape(values_shape), shape)
    term_index = np.broadcast_to(np.arange(len(terms)).reshape(pub.observables.shape), shape)
    evs = np.zeros(shape)
    stds = np.zeros(shape)
    for index in np.ndindex(*shape):
        binding = binding_index[index]
        for label, coeff in terms[term_index[index]].items():
            if label == identity:
                evs[index] += coeff
                continue
            evs[index] += coeff * expvals[label][binding]
            stds[index] += abs(coeff) * math.sqrt(max(variances[label][binding], 0.0))
    stds /= math.sqrt(shots)
    return PubResult(
        DataBin(evs=evs, stds=stds, shape=shape),
        metadata={"target_precision": pub.precision, "shots": shots, "circuit_metadata": pub.circuit.metadata},
    )
