"""Pauli-Lindblad models of boxed gate layers, computed from a known Aer noise model.

IBM learns the noise of every unique entangling layer before PEC or PEA (the legacy
``estimator``'s ``layer_noise_learning`` stage). A simulator knows its noise exactly, so this
module computes what an ideal learner would find: the Pauli-twirled noise of each layer.

For every gate inside a layer's box the noise model's error on its qubits (Aer places it after
the gate) is twirled into a Pauli channel with fidelities ``f_b = Tr(P_b E(P_b)) / 2^n``; the
rates of a Pauli-Lindblad model with every non-identity Pauli on the gate's qubits as generators
solve ``-log(f_b) / 2 = sum_k λ_k [P_k anticommutes with P_b]`` (least squares, negative rates
clipped to 0, as learners report them). Gates of one layer act on disjoint qubits, so the layer's
model is the union of its gates' models, indexed locally to the box's qubits as
``samplomatic``'s ``InjectNoise`` expects (the client's executor Estimator reads
``resilience.layer_noise_model`` as ``(box instruction, PauliLindbladMap)`` pairs).

A user who learned the noise (``NoiseLearner``) and passes it as EstimatorV2's
``resilience.layer_noise_model`` gets that model instead (:func:`learned_layer_map`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import CircuitInstruction
from qiskit.quantum_info import Pauli, PauliLindbladMap, SuperOp
from qiskit_aer.noise import NoiseModel, QuantumError

# Rates below this (per generator) are dropped: they change no expectation value measurably and
# only lengthen the PEC/PEA sampling tables.
MIN_RATE = 1e-9


@cache
def _paulis(num_qubits: int) -> tuple[Pauli, ...]:
    """Every non-identity Pauli on ``num_qubits`` qubits."""
    labels = ("".join(p) for p in itertools.product("IXYZ", repeat=num_qubits))
    return tuple(Pauli(label) for label in labels if set(label) != {"I"})


@cache
def _anticommutation(num_qubits: int) -> np.ndarray:
    paulis = _paulis(num_qubits)
    return np.array([[0.0 if a.commutes(b) else 1.0 for b in paulis] for a in paulis])


def pauli_fidelities(error: QuantumError) -> np.ndarray:
    """Pauli fidelities ``f_b`` of ``error``'s channel, in the order of :func:`_paulis`."""
    superop = SuperOp(error.to_quantumchannel()).data
    dim = 2**error.num_qubits
    fidelities = []
    for pauli in _paulis(error.num_qubits):
        matrix = pauli.to_matrix()
        # SuperOp acts on column-stacked density matrices.
        evolved = (superop @ matrix.reshape(-1, order="F")).reshape(dim, dim, order="F")
        fidelities.append(float(np.real(np.trace(matrix @ evolved))) / dim)
    return np.array(fidelities)


def lindblad_rates(error: QuantumError) -> list[tuple[Pauli, float]]:
    """The twirled ``error`` as Pauli-Lindblad generators and rates (rates >= ``MIN_RATE``)."""
    fidelities = np.clip(pauli_fidelities(error), 1e-12, 1.0)
    rates, *_ = np.linalg.lstsq(_anticommutation(error.num_qubits), -np.log(fidelities) / 2, rcond=None)
    return [
        (pauli, float(rate)) for pauli, rate in zip(_paulis(error.num_qubits), rates, strict=True) if rate >= MIN_RATE
    ]


def _gate_error(noise_model: NoiseModel, name: str, qubits: tuple[int, ...]) -> QuantumError | None:
    local = getattr(noise_model, "_local_quantum_errors", {})
    if qubits in local.get(name, {}):
        return local[name][qubits]
    default = getattr(noise_model, "_default_quantum_errors", {})
    error = default.get(name)
    return error if error is not None and error.num_qubits == len(qubits) else None


def layer_map(layer: CircuitInstruction, circuit: QuantumCircuit, noise_model: NoiseModel) -> PauliLindbladMap:
    """The Pauli-Lindblad model of one boxed layer of ``circuit`` under ``noise_model``.

    ``layer`` is a box instruction over qubits of ``circuit`` (an ISA circuit: its qubit indices
    are the backend's). The map has ``len(layer.qubits)`` qubits, indexed as the box lists them.
    """
    body = layer.operation.body
    local_of = {bit: i for i, bit in enumerate(body.qubits)}
    physical = [circuit.find_bit(q).index for q in layer.qubits]
    terms: list[tuple[str, list[int], float]] = []
    for inner in body.data:
        if inner.operation.name in ("barrier", "delay") or inner.operation.num_qubits == 0:
            continue
        local = [local_of[q] for q in inner.qubits]
        error = _gate_error(noise_model, inner.operation.name, tuple(physical[i] for i in local))
        if error is None:
            continue
        for pauli, rate in lindblad_rates(error):
            # Pauli labels are little-endian: character -1-j acts on the gate's qubit j.
            support = [j for j in range(pauli.num_qubits) if pauli[j].to_label() != "I"]
            letters = "".join(pauli[j].to_label() for j in support)
            terms.append((letters, [local[j] for j in support], rate))
    if not terms:
        return PauliLindbladMap.identity(len(layer.qubits))
    return PauliLindbladMap.from_sparse_list(terms, num_qubits=len(layer.qubits)).simplify()


def _entangled_pairs(circuit: QuantumCircuit, labels: Sequence[int]) -> frozenset[frozenset[int]]:
    """The qubit pairs (as ``labels``, e.g. physical indices) of ``circuit``'s 2-qubit gates."""
    return frozenset(
        frozenset(labels[circuit.find_bit(q).index] for q in inner.qubits)
        for inner in circuit.data
        if inner.operation.num_qubits == 2 and inner.operation.name not in ("barrier", "delay")
    )


def learned_layer_map(
    layer: CircuitInstruction, circuit: QuantumCircuit, layer_errors: Sequence[Any]
) -> PauliLindbladMap:
    """The map of a user's learned ``LayerError`` for ``layer``, or the identity if none fits.

    A ``LayerError`` (legacy ``NoiseLearner`` result, ``resilience.layer_noise_model`` of
    EstimatorV2) fits a layer when its circuit entangles the same physical qubit pairs as the
    layer's box. IBM treats layers missing from the given model as noiseless; so does this. Terms
    on qubits outside the box are dropped.
    """
    physical = [circuit.find_bit(q).index for q in layer.qubits]
    body = layer.operation.body
    wanted = _entangled_pairs(body, physical)
    local_of = {qubit: i for i, qubit in enumerate(physical)}
    for learned in layer_errors:
        error = getattr(learned, "error", None)
        if error is None or _entangled_pairs(learned.circuit, learned.qubits) != wanted:
            continue
        terms: list[tuple[str, list[int], float]] = []
        for pauli, rate in zip(error.generators, error.rates, strict=True):
            support = [j for j in range(pauli.num_qubits) if pauli[j].to_label() != "I"]
            if not support or rate == 0 or any(learned.qubits[j] not in local_of for j in support):
                continue
            letters = "".join(pauli[j].to_label() for j in support)
            terms.append((letters, [local_of[learned.qubits[j]] for j in support], float(rate)))
        if terms:
            return PauliLindbladMap.from_sparse_list(terms, num_qubits=len(layer.qubits)).simplify()
        break
    return PauliLindbladMap.identity(len(layer.qubits))


def layer_noise_model(
    layers: Sequence[CircuitInstruction],
    circuits: Sequence[QuantumCircuit],
    noise_model: NoiseModel,
    learned: Sequence[Any] | None = None,
) -> list[tuple[CircuitInstruction, PauliLindbladMap]]:
    """``(layer, map)`` for every layer, as ``resilience.layer_noise_model`` of the executor Estimator.

    ``circuits`` are the PUB circuits the layers were found in; a layer's qubits are looked up in
    the first circuit that has them. ``learned``: a user's ``LayerError`` list; when given it is
    used instead of ``noise_model`` (:func:`learned_layer_map`).

    Raises:
        ValueError: a layer's qubits are in none of ``circuits``.
    """
    pairs: list[tuple[CircuitInstruction, PauliLindbladMap]] = []
    for layer in layers:
        owner = next((c for c in circuits if set(layer.qubits) <= set(c.qubits)), None)
        if owner is None:
            raise ValueError("A boxed layer's qubits belong to none of the PUB circuits.")
        if learned is not None:
            pairs.append((layer, learned_layer_map(layer, owner, learned)))
        else:
            pairs.append((layer, layer_map(layer, owner, noise_model)))
    return pairs
