"""Noisy Clifford circuits sampled with Stim keep Aer's semantics.

Gates are checked exactly (Stim's tableau of the translation against Qiskit's ``Clifford`` of
the gate); noise is checked against Aer's density matrix on small circuits (total variation
distance of the outcome laws within shot noise): gate errors after gates, errors on ``measure``
before it, reset errors after the reset, asymmetric readout errors on the recorded bits, and a
classical bit written twice keeping its last value.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import stim
from qiskit import QuantumCircuit
from qiskit.circuit.library import DCXGate, ECRGate
from qiskit.quantum_info import Clifford, Pauli
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error, pauli_error, thermal_relaxation_error

from qiskit_runtime_server.worker.engines.stim_sampler import NoiseTable, pauli_probabilities, translate

SHOTS = 200_000


def qiskit_images(circuit: QuantumCircuit) -> list[str]:
    """Images of X_k and Z_k under the circuit's Clifford, as Stim-ordered signed labels."""
    clifford = Clifford(circuit)
    n = circuit.num_qubits
    out = []
    for kind in "XZ":
        for k in range(n):
            label = ["I"] * n
            label[n - 1 - k] = kind
            image = Pauli("".join(label)).evolve(clifford, frame="s").to_label()
            sign = "-" if image.startswith("-") else "+"
            out.append(sign + image.lstrip("-i")[::-1].replace("I", "_"))
    return out


def stim_images(circuit: QuantumCircuit) -> list[str]:
    translated = translate(circuit, NoiseTable(None))
    assert translated is not None
    tableau = stim.Tableau.from_circuit(translated.circuit)
    n = circuit.num_qubits
    # Stim may drop trailing identity qubits from the circuit; pad the tableau to n qubits.
    if len(tableau) < n:
        tableau = tableau + stim.Tableau(n - len(tableau))
    return [str(tableau.x_output(k)) for k in range(n)] + [str(tableau.z_output(k)) for k in range(n)]


@pytest.mark.parametrize(
    "name",
    ["id", "x", "y", "z", "h", "s", "sdg", "sx", "sxdg", "cx", "cy", "cz", "swap", "iswap", "ecr", "dcx"],
)
def test_every_clifford_gate_translates_to_the_same_clifford(name: str) -> None:
    gates = {"ecr": ECRGate(), "dcx": DCXGate()}
    for qubits in ([0], [1]) if name in ("id", "x", "y", "z", "h", "s", "sdg", "sx", "sxdg") else ([0, 1], [1, 0]):
        circuit = QuantumCircuit(2)
        circuit.h(0)  # a non-trivial frame, so that a wrong qubit order shows
        circuit.s(1)
        if name in gates:
            circuit.append(gates[name], qubits)
        else:
            getattr(circuit, name)(*qubits)
        assert stim_images(circuit) == qiskit_images(circuit), (name, qubits)


@pytest.mark.parametrize("turns", [-3, -2, -1, 0, 1, 2, 3, 4, 5])
def test_rz_quarter_turns(turns: int) -> None:
    circuit = QuantumCircuit(1)
    circuit.h(0)
    circuit.rz(turns * math.pi / 2 + 3e-9, 0)  # within the snapping tolerance
    circuit.h(0)
    assert stim_images(circuit) == qiskit_images(circuit.assign_parameters({}))


def test_random_clifford_circuits_match_qiskit_exactly() -> None:
    rng = np.random.default_rng(11)
    one = ["h", "s", "sdg", "sx", "sxdg", "x", "y", "z"]
    two = ["cx", "cz", "ecr", "swap", "iswap", "dcx", "cy"]
    for _ in range(30):
        circuit = QuantumCircuit(5)
        for _ in range(40):
            if rng.random() < 0.4:
                a, b = (int(q) for q in rng.choice(5, 2, replace=False))
                gate = str(rng.choice(two))
                circuit.append(ECRGate(), [a, b]) if gate == "ecr" else getattr(circuit, gate)(a, b)
            elif rng.random() < 0.3:
                circuit.rz(int(rng.integers(-4, 5)) * math.pi / 2, int(rng.integers(5)))
            else:
                getattr(circuit, str(rng.choice(one)))(int(rng.integers(5)))
        assert stim_images(circuit) == qiskit_images(circuit)


def laws(circuit: QuantumCircuit, model: NoiseModel, seed: int = 5) -> tuple[dict[str, float], dict[str, float]]:
    """Outcome laws of ``circuit`` from Stim and from Aer's density matrix (SHOTS shots each)."""
    translated = translate(circuit, NoiseTable(model))
    assert translated is not None
    bits = translated.sample(SHOTS, seed)
    stim_counts = Counter("".join("1" if b else "0" for b in row[::-1]) for row in bits)
    aer = AerSimulator(method="density_matrix", noise_model=model)
    aer_counts = aer.run(circuit, shots=SHOTS, seed_simulator=seed).result().get_counts()
    return (
        {key: value / SHOTS for key, value in stim_counts.items()},
        {key.replace(" ", ""): value / SHOTS for key, value in aer_counts.items()},
    )


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def test_pauli_noise_readout_and_order_of_errors_match_aer() -> None:
    model = NoiseModel()
    model.add_quantum_error(depolarizing_error(0.05, 1), ["sx", "x"], [0])
    model.add_quantum_error(depolarizing_error(0.03, 1), ["sx", "x"], [1])
    model.add_quantum_error(depolarizing_error(0.08, 2), ["ecr"], [0, 1])
    model.add_quantum_error(
        depolarizing_error(0.08, 2).compose(pauli_error([("XI", 0.2), ("II", 0.8)])), ["ecr"], [1, 2]
    )
    # Errors on measure act before it, errors on reset after it (as Aer applies them).
    model.add_quantum_error(pauli_error([("X", 0.3), ("I", 0.7)]), "measure", [2])
    model.add_quantum_error(pauli_error([("X", 0.25), ("I", 0.75)]), "reset", [1])
    model.add_readout_error(ReadoutError([[0.9, 0.1], [0.3, 0.7]]), [0])
    model.add_readout_error(ReadoutError([[0.97, 0.03], [0.05, 0.95]]), [1])
    circuit = QuantumCircuit(3, 4)
    circuit.sx(0)
    circuit.ecr(0, 1)
    circuit.x(1)
    circuit.ecr(1, 2)
    circuit.measure(1, 3)  # mid-circuit; clbit 3 is written again below
    circuit.reset(1)
    circuit.sx(1)
    circuit.ecr(0, 1)
    circuit.measure([0, 1, 2], [0, 1, 2])
    circuit.measure(2, 3)  # the last write wins
    stim_law, aer_law = laws(circuit, model)
    # Each law has 200k shots over at most 16 outcomes: TVD noise is about 0.003.
    assert total_variation(stim_law, aer_law) < 0.012, (stim_law, aer_law)
    # A wrong order of the measure error (after instead of before) changes clbit 2's law by 0.3.
    assert (
        abs(sum(p for k, p in stim_law.items() if k[-3] == "1") - sum(p for k, p in aer_law.items() if k[-3] == "1"))
        < 0.01
    )


def test_non_pauli_errors_and_correlated_readout_are_refused() -> None:
    circuit = QuantumCircuit(2, 2)
    circuit.sx(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    relaxation = NoiseModel()
    relaxation.add_quantum_error(thermal_relaxation_error(50e-6, 70e-6, 1e-6), "sx", [0])
    assert translate(circuit, NoiseTable(relaxation)) is None
    correlated = NoiseModel()
    correlated.add_readout_error(ReadoutError(np.eye(4) * 0.96 + 0.01), [0, 1])
    assert translate(circuit, NoiseTable(correlated)) is None
    assert pauli_probabilities(thermal_relaxation_error(50e-6, 40e-6, 1e-6)) is None  # holds a reset


def test_pauli_probabilities_are_in_stim_order() -> None:
    error = pauli_error([("IX", 0.1), ("ZI", 0.2), ("YX", 0.05), ("II", 0.65)])  # Qiskit labels: qubit 0 last
    probabilities = pauli_probabilities(error)
    assert probabilities is not None
    order = [a + b for a in "IXYZ" for b in "IXYZ"][1:]  # Stim: first letter on qubit 0
    assert probabilities[order.index("XI")] == pytest.approx(0.1)
    assert probabilities[order.index("IZ")] == pytest.approx(0.2)
    assert probabilities[order.index("XY")] == pytest.approx(0.05)
    assert probabilities.sum() == pytest.approx(0.35)


def test_ghz_30_on_a_backend_model_matches_aers_stabilizer_method() -> None:
    """At a width no density matrix reaches: Stim and Aer's stabilizer method on the same 30-qubit
    GHZ circuit and the same (twirled, compacted) fake_sherbrooke noise model agree on every
    <Z0 Zi> within 5 sigma, and the correlations decay with distance as the noise implies."""
    from qiskit.transpiler import generate_preset_pass_manager

    from bench import tutorials
    from qiskit_runtime_server.worker.engines.aer import AerEngine, fake_backend
    from qiskit_runtime_server.worker.engines.compaction import compact_circuit, used_instructions

    backend = fake_backend("fake_sherbrooke")
    ghz = tutorials.ghz(30)
    ghz.measure_all()
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=2).run(ghz)
    keep = sorted({isa.find_bit(q).index for i in isa.data if i.name != "barrier" for q in i.qubits})
    sub = compact_circuit(isa, keep, others="drop")
    used = frozenset((name, tuple(keep[i] for i in qubits)) for name, qubits in used_instructions([sub]))
    simulator, compacted = AerEngine().noise.simulator("fake_sherbrooke", None, keep, used, form="pauli")
    assert compacted
    model = simulator.options.noise_model
    shots = 3000
    translated = translate(sub, NoiseTable(model))
    assert translated is not None
    stim_bits = translated.sample(shots, 9)
    aer = AerSimulator(method="stabilizer", noise_model=model)
    memory = aer.run(sub, shots=shots, seed_simulator=9, memory=True).result().get_memory()
    aer_bits = np.array([[c == "1" for c in reversed(row.replace(" ", ""))] for row in memory])
    clbit = {q: q for q in range(30)}  # measure_all: virtual qubit i -> clbit i

    def correlations(bits: np.ndarray) -> np.ndarray:
        signs = 1 - 2 * bits.astype(int)
        return np.array([np.mean(signs[:, clbit[0]] * signs[:, clbit[i]]) for i in range(1, 30)])

    ours, theirs = correlations(stim_bits), correlations(aer_bits)
    sigma = np.sqrt((1 - ours**2 + 1e-3) / shots + (1 - theirs**2 + 1e-3) / shots)
    assert np.all(np.abs(ours - theirs) <= 5 * sigma), (ours, theirs)
    assert ours[0] > ours[-1] + 0.05  # farther qubits: more noisy gates in between
