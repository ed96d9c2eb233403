"""Noisy Clifford circuits sampled with Stim's Pauli-frame simulator.

Aer's stabilizer method simulates every shot on its own: a noisy 100-qubit circuit costs it
milliseconds per shot, and a Hello-world estimator job needs tens of thousands of shots. Stim
(``stim.Circuit.compile_sampler``) propagates the Pauli errors of many shots at once as frames
against one reference run, which is exact for Clifford circuits with Pauli noise and takes
microseconds per shot at that width.

The circuit handed over is a bound, compacted Clifford circuit (``clifford.py`` decided that) and
its noise model holds only Pauli errors (``AerEngine`` twirls every other error first, stating
the distance). The translation keeps Aer's semantics:

* gate errors follow their gate, reset errors follow the reset, and errors on ``measure`` come
  before the measurement (as Aer applies them);
* readout errors are classical: each recorded outcome is flipped with the assignment
  probabilities ``P(observed | true)`` of its qubit, after sampling (exact, since no outcome feeds
  a later operation in a circuit without control flow);
* barriers and delays do nothing here (delays under a relaxation pass never reach this module).

:func:`sample` returns ``None`` where the model holds something Stim cannot take (a non-Pauli
error, a correlated readout error): the caller then uses Aer's stabilizer method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import numpy as np
import stim
from qiskit.circuit import QuantumCircuit
from qiskit.circuit.library import DCXGate, ECRGate
from qiskit.quantum_info import Clifford, Pauli
from qiskit_aer.noise import NoiseModel, QuantumError

# Qiskit gate name -> Stim gate name, where both name the same Clifford (up to global phase).
_DIRECT = {
    "id": "I", "x": "X", "y": "Y", "z": "Z", "h": "H", "s": "S", "sdg": "S_DAG", "sx": "SQRT_X",
    "sxdg": "SQRT_X_DAG", "cx": "CX", "cy": "CY", "cz": "CZ", "swap": "SWAP", "iswap": "ISWAP",
}  # fmt: skip
# Gates with no Stim name: translated through their tableau (see _decomposed).
_BY_TABLEAU = {"ecr": ECRGate, "dcx": DCXGate}
# rz(k pi/2) for k = 0..3, as Stim gates.
_QUARTER_TURNS = ("I", "S", "Z", "S_DAG")
# Stim's PAULI_CHANNEL_2 argument order: the first letter acts on the first target.
_PAIRS = tuple(a + b for a in "IXYZ" for b in "IXYZ")[1:]


def _stim_pauli(pauli: Pauli) -> stim.PauliString:
    """A Qiskit Pauli (label big-endian, qubit 0 last) as a Stim Pauli string (qubit 0 first)."""
    label = pauli.to_label()
    sign = "-" if label.startswith("-") else "+"
    body = label.lstrip("-i")
    return stim.PauliString(sign + body[::-1])


@cache
def _decomposed(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The Stim gates (name, local targets) of Qiskit Clifford gate ``name``, from its tableau:
    Stim's ``to_circuit`` writes any tableau as H, S and CX gates."""
    clifford = Clifford(_BY_TABLEAU[name]())
    n = clifford.num_qubits

    def image(label: str, k: int) -> stim.PauliString:
        single = ["I"] * n
        single[n - 1 - k] = label
        return _stim_pauli(Pauli("".join(single)).evolve(clifford, frame="s"))

    tableau = stim.Tableau.from_conjugated_generators(
        xs=[image("X", k) for k in range(n)], zs=[image("Z", k) for k in range(n)]
    )
    gates = []
    for instruction in tableau.to_circuit(method="elimination"):
        assert isinstance(instruction, stim.CircuitInstruction)
        targets = [t.value for t in instruction.targets_copy()]
        arity = 2 if instruction.name in ("CX", "CZ", "SWAP") else 1
        for start in range(0, len(targets), arity):
            gates.append((instruction.name, tuple(targets[start : start + arity])))
    return tuple(gates)


def stim_gates(name: str, qubits: Sequence[int], params: Sequence[float]) -> list[tuple[str, tuple[int, ...]]]:
    """Stim gates for one bound Qiskit Clifford gate on ``qubits``.

    Raises:
        ValueError: the gate is not one this module translates (not Clifford, or unknown).
    """
    if name in _DIRECT:
        return [(_DIRECT[name], tuple(qubits))]
    if name == "rz":
        return [(_QUARTER_TURNS[round(float(params[0]) / (math.pi / 2)) % 4], tuple(qubits))]
    if name in _BY_TABLEAU:
        return [(gate, tuple(qubits[t] for t in targets)) for gate, targets in _decomposed(name)]
    raise ValueError(f"no Stim translation for gate {name!r}")


def pauli_probabilities(error: QuantumError) -> np.ndarray | None:
    """The probabilities of the non-identity Paulis of a Pauli-mixture ``error``, in Stim's order
    (``PAULI_CHANNEL_1``: X, Y, Z; ``PAULI_CHANNEL_2``: IX, IY, ..., ZZ, first letter on the
    error's qubit 0); ``None`` when ``error`` is not a mixture of Paulis or acts on more than two
    qubits."""
    n = error.num_qubits
    if n > 2:
        return None
    labels = ("X", "Y", "Z") if n == 1 else _PAIRS
    index = {label: i for i, label in enumerate(labels)}
    probabilities = np.zeros(len(labels))
    for circuit, probability in zip(error.circuits, error.probabilities, strict=True):
        if any(i.operation.name not in ("id", "x", "y", "z", "pauli") for i in circuit.data):
            return None
        label = Pauli(circuit).to_label().lstrip("-i")[::-1]  # Stim order: qubit 0 first
        if label != "I" * n:
            probabilities[index[label]] += probability
    return probabilities


class StimCircuit:
    """A compacted Clifford circuit with its Pauli noise, as a Stim circuit ready to sample.

    ``measured[m]`` is the circuit's clbit index written by Stim measurement ``m`` and
    ``flips[m]`` the probabilities ``(P(1 | 0), P(0 | 1))`` of misreading it.
    """

    def __init__(self, circuit: stim.Circuit, measured: list[int], flips: np.ndarray, num_clbits: int) -> None:
        self.circuit = circuit
        self.measured = measured
        self.flips = flips
        self.num_clbits = num_clbits

    def sample(self, shots: int, seed: int) -> np.ndarray:
        """Recorded bits ``(shots, num_clbits)`` (bool), readout errors applied."""
        bits = np.zeros((shots, self.num_clbits), dtype=bool)
        if not self.measured:
            return bits
        outcomes = self.circuit.compile_sampler(seed=seed).sample(shots)
        rng = np.random.default_rng(seed)
        flip_probability = np.where(outcomes, self.flips[:, 1], self.flips[:, 0])
        outcomes ^= rng.random(outcomes.shape) < flip_probability
        # A clbit written twice keeps its last measurement.
        for m, clbit in enumerate(self.measured):
            bits[:, clbit] = outcomes[:, m]
        return bits


class NoiseTable:
    """A Pauli noise model read once for Stim: each instruction's channel as Stim text and each
    qubit's readout flips (built per model, shared by the circuits of a run)."""

    def __init__(self, model: NoiseModel | None) -> None:
        self.model = model
        self._channels: dict[tuple[str, tuple[int, ...]], str | None] = {}
        # Stim text of a gate and its error, by (name, qubits, quarter turns of an rz).
        self.gate_text: dict[tuple[str, tuple[int, ...], int], str] = {}
        # Correlated readout errors (on several qubits) have no per-bit form here.
        readouts = getattr(model, "_local_readout_errors", {}) if model is not None else {}
        default = getattr(model, "_default_readout_error", None) if model is not None else None
        self.supported = model is None or (
            not getattr(model, "_nonlocal_quantum_errors", None)
            and all(len(qubits) == 1 for qubits in readouts)
            and (default is None or default.number_of_qubits == 1)
        )

    def channel(self, name: str, qubits: tuple[int, ...]) -> str | None:
        """Stim text of the error after (``measure``: before) ``name`` on ``qubits``, ``""`` for
        none; ``None`` when the error is not a Pauli mixture on at most two qubits."""
        key = (name, qubits)
        if key not in self._channels:
            self._channels[key] = self._text(name, qubits)
        return self._channels[key]

    def _text(self, name: str, qubits: tuple[int, ...]) -> str | None:
        if self.model is None:
            return ""
        local = getattr(self.model, "_local_quantum_errors", {}).get(name, {})
        error = local.get(qubits) or getattr(self.model, "_default_quantum_errors", {}).get(name)
        if error is None:
            return ""
        probabilities = pauli_probabilities(error)
        if probabilities is None:
            return None
        if not probabilities.any():
            return ""
        # Stim refuses probabilities that sum past 1 by rounding; the identity part absorbs it.
        probabilities = np.clip(probabilities, 0.0, 1.0)
        if probabilities.sum() > 1.0:
            probabilities = probabilities / probabilities.sum()
        gate = "PAULI_CHANNEL_1" if len(qubits) == 1 else "PAULI_CHANNEL_2"
        return f"{gate}({','.join(repr(float(p)) for p in probabilities)}) {' '.join(map(str, qubits))}\n"

    def readout(self, qubit: int) -> tuple[float, float] | None:
        """``(P(1 | 0), P(0 | 1))`` of ``qubit``; ``None`` for a readout error on several qubits."""
        if self.model is None:
            return (0.0, 0.0)
        local = getattr(self.model, "_local_readout_errors", {})
        error = local.get((qubit,)) or getattr(self.model, "_default_readout_error", None)
        if error is None:
            return (0.0, 0.0)
        probabilities = np.asarray(error.probabilities)
        if probabilities.shape != (2, 2):
            return None
        return (float(probabilities[0, 1]), float(probabilities[1, 0]))


def translate(circuit: QuantumCircuit, noise: NoiseTable) -> StimCircuit | None:
    """``circuit`` (bound Clifford gates, measurements, resets, barriers, delays; qubit ``i`` of
    the circuit is noise-model qubit ``i``) as a :class:`StimCircuit`, or ``None`` when the noise
    model holds an error Stim cannot apply."""
    if not noise.supported:
        return None
    lines: list[str] = []
    measured: list[int] = []
    flips: list[tuple[float, float]] = []
    qubit_index = {bit: i for i, bit in enumerate(circuit.qubits)}
    clbit_index = {bit: i for i, bit in enumerate(circuit.clbits)}
    for instruction in circuit.data:
        name = instruction.name
        if name in ("barrier", "delay"):
            continue
        qubits = tuple(qubit_index[q] for q in instruction.qubits)
        channel = noise.channel(name, qubits)
        if channel is None:
            return None
        if name == "measure":
            readout = noise.readout(qubits[0])
            if readout is None:
                return None
            lines.append(f"{channel}M {qubits[0]}\n")
            measured.append(clbit_index[instruction.clbits[0]])
            flips.append(readout)
            continue
        if name == "reset":
            lines.append(f"R {qubits[0]}\n{channel}")
            continue
        params = instruction.params
        key = (name, qubits, round(float(params[0]) / (math.pi / 2)) % 4 if name == "rz" else 0)
        text = noise.gate_text.get(key)
        if text is None:
            translated = stim_gates(name, qubits, params)
            gates = "".join(f"{gate} {' '.join(map(str, targets))}\n" for gate, targets in translated)
            text = noise.gate_text[key] = gates + channel
        lines.append(text)
    flips_array = np.array(flips, dtype=float).reshape(-1, 2)
    return StimCircuit(stim.Circuit("".join(lines)), measured, flips_array, circuit.num_clbits)
