"""Small groups (2-6 qubits) of a wide ISA circuit run as one batched density matrix in numpy.

The reference is the engine's Aer path for the same group (``AerEngine.run_group``: compacted
circuit, the backend's noise model cut down to it, Aer's density matrix): both laws are compared
binding by binding (total variation distance within shot noise), with parameterized gates,
``ecr``, a delay under the relaxation pass, a reset, asymmetric readout and measurements in
another order than the qubits'. Fused programs on 4-6 qubits are compared with Aer's exact
probabilities. Negative controls show the comparisons can fail.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, amplitude_damping_error, depolarizing_error, thermal_relaxation_error

from qiskit_runtime_server.worker.engines import aer as aer_engine
from qiskit_runtime_server.worker.engines import small_groups
from qiskit_runtime_server.worker.engines.aer import AerEngine, backend_noise_model, fake_backend
from qiskit_runtime_server.worker.engines.partition import independent_components
from qiskit_runtime_server.worker.engines.single_qubit import NoiseChannels
from qiskit_runtime_server.worker.engines.small_groups import compile_small_group

BACKEND = "fake_sherbrooke"
SHOTS = 60_000


def edges(backend_name: str) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in fake_backend(backend_name).coupling_map.get_edges()}


def coupled(backend_name: str, count: int) -> list[int]:
    """``count`` physical qubits on a path of the coupling map (either direction)."""
    undirected = edges(backend_name) | {(b, a) for a, b in edges(backend_name)}
    path = [0]
    while len(path) < count:
        path.append(next(b for a, b in sorted(undirected) if a == path[-1] and b not in path))
    return path


def ecr(circuit: QuantumCircuit, a: int, b: int) -> None:
    """An ``ecr`` between ``a`` and ``b`` in the direction the backend offers."""
    circuit.ecr(a, b) if (a, b) in edges(BACKEND) else circuit.ecr(b, a)


def wide_circuit(qubits: list[int], theta: Parameter) -> QuantumCircuit:
    """A noisy circuit on ``qubits`` of the 127-qubit device: parameterized rotations, ``ecr``
    along the path, a delay, a reset, and measurements in reverse order."""
    circuit = QuantumCircuit(127, len(qubits))
    circuit.sx(qubits[0])
    for a, b in itertools.pairwise(qubits):
        ecr(circuit, a, b)
        circuit.sx(b)
        circuit.rz(theta, b)
        circuit.sx(b)
        circuit.rz(theta / 2 + 0.3, a)
        circuit.sx(a)
    circuit.delay(2000, qubits[-1], unit="dt")
    circuit.x(qubits[0])
    if len(qubits) == 3:
        circuit.reset(qubits[1])
        circuit.sx(qubits[1])
        ecr(circuit, qubits[1], qubits[2])
    for clbit, qubit in reversed(list(enumerate(qubits))):
        circuit.measure(qubit, clbit)
    return circuit


def law(bits: np.ndarray) -> list[dict[str, float]]:
    """Per binding, the frequency of each outcome string of ``bits`` ``(bindings, shots, c)``."""
    out = []
    for binding in bits:
        counts = Counter("".join("1" if b else "0" for b in row) for row in binding)
        out.append({key: value / binding.shape[0] for key, value in counts.items()})
    return out


def tvd(p: dict[str, float], q: dict[str, float]) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


@pytest.mark.parametrize("width", [2, 3])
def test_small_group_law_matches_the_aer_density_matrix(width: int) -> None:
    theta = Parameter("θ")
    qubits = coupled(BACKEND, width)
    circuit = wide_circuit(qubits, theta)
    values = np.array([[0.0], [math.pi / 3], [2.1]])
    columns = {theta: 0}
    groups = independent_components(circuit)
    assert groups is not None and len(groups) == 1
    group = groups[0]
    noise = NoiseChannels(backend_noise_model(BACKEND))
    program = compile_small_group(circuit, group.qubits, group.clbits, noise, values, columns)
    assert program is not None
    ours = program.sample(SHOTS, np.random.default_rng(3), len(group.clbits))
    engine = AerEngine()
    reference = engine.run_group(BACKEND, None, circuit, group, values, columns, SHOTS, 11)
    assert sum(engine.report.methods.values()) == 1, engine.report.methods  # one Aer run
    for p, q in zip(law(ours), law(reference), strict=True):
        # 60k shots over at most 8 outcomes: the TVD of two samples of one law is about 0.006.
        assert tvd(p, q) < 0.02, (p, q)
    # The exact law is a probability distribution per binding, and the bindings differ.
    exact = program.probabilities()
    assert np.allclose(exact.sum(axis=1), 1.0)
    assert not np.allclose(exact[0], exact[1], atol=0.05)


def test_a_wrong_noise_model_is_detected() -> None:
    """Negative control: the same comparison against the group without noise fails."""
    theta = Parameter("θ")
    qubits = coupled(BACKEND, 2)
    circuit = wide_circuit(qubits, theta)
    values = np.array([[0.4]])
    group = independent_components(circuit)[0]  # type: ignore[index]
    ideal = compile_small_group(circuit, group.qubits, group.clbits, NoiseChannels(None), values, {theta: 0})
    assert ideal is not None
    reference = AerEngine().run_group(BACKEND, None, circuit, group, values, {theta: 0}, SHOTS, 11)
    assert tvd(law(ideal.sample(SHOTS, np.random.default_rng(3), 2))[0], law(reference)[0]) > 0.02


def test_what_it_does_not_cover_goes_back_to_aer() -> None:
    qubits = coupled(BACKEND, 2)
    noise = NoiseChannels(backend_noise_model(BACKEND))
    values = np.zeros((1, 0))
    mid = QuantumCircuit(127, 2)
    ecr(mid, qubits[0], qubits[1])
    mid.measure(qubits[0], 0)
    mid.sx(qubits[0])  # a gate after the measurement of its qubit
    mid.measure(qubits[1], 1)
    assert compile_small_group(mid, tuple(qubits), (0, 1), noise, values, {}) is None
    with_flow = QuantumCircuit(127, 2)
    ecr(with_flow, qubits[0], qubits[1])
    with_flow.measure(qubits[0], 0)
    with with_flow.if_test((with_flow.clbits[0], 1)):
        with_flow.x(qubits[1])
    with_flow.measure(qubits[1], 1)
    assert compile_small_group(with_flow, tuple(qubits), (0, 1), noise, values, {}) is None


def noisy_model() -> NoiseModel:
    """Depolarizing and relaxation on gates, none on ``measure``: Aer's probabilities before the
    measurements are then the exact law of the true outcomes."""
    model = NoiseModel(basis_gates=["rz", "sx", "x", "ecr"])
    relax = thermal_relaxation_error(80e3, 60e3, 60.0)
    model.add_all_qubit_quantum_error(depolarizing_error(0.01, 1).compose(relax), ["sx", "x"])
    model.add_all_qubit_quantum_error(depolarizing_error(0.03, 2).compose(relax.tensor(relax)), ["ecr"])
    return model


def layered_circuit(width: int, theta: Parameter) -> QuantumCircuit:
    """Twirled-layer shapes on ``width`` qubits: parameterized ``rz``/``sx`` runs beside ``ecr``
    in both directions, an error stated in the circuit, a reset, and measurements out of order."""
    circuit = QuantumCircuit(width, width)
    stated = amplitude_damping_error(0.2)
    for layer in range(3):
        for q in range(width):
            circuit.rz(theta * (q + 1) + layer, q)
            circuit.sx(q)
            circuit.rz(0.4 * q - theta, q)
        for a in range(layer % 2, width - 1, 2):
            circuit.ecr(a, a + 1) if layer % 3 else circuit.ecr(a + 1, a)
        circuit.append(stated, [layer % width])
        if layer == 1:
            circuit.reset(width - 1)
            circuit.sx(width - 1)
    for clbit, qubit in enumerate(reversed(range(width))):
        circuit.measure(qubit, clbit)
    return circuit


@pytest.mark.parametrize("width", [4, 5, 6])
def test_the_fused_program_is_the_aer_density_matrix_exactly(width: int) -> None:
    """Fused blocks (rz/sx runs folded into the ecr beside them) give Aer's exact law, binding by
    binding, to 1e-9: no shot noise in the comparison."""
    theta = Parameter("θ")
    circuit = layered_circuit(width, theta)
    values = np.array([[0.0], [0.7], [2.3]])
    model = noisy_model()
    program = compile_small_group(
        circuit, tuple(range(width)), tuple(range(width)), NoiseChannels(model), values, {theta: 0}
    )
    assert program is not None
    assert len(program.blocks) < program.steps / 3  # fusion took place
    ours = program.probabilities()
    body = circuit.remove_final_measurements(inplace=False)
    measured = list(reversed(range(width)))  # clbit j measures this qubit
    body.save_probabilities(measured)
    simulator = AerSimulator(method="density_matrix", noise_model=model)
    for row, binding in zip(ours, values, strict=True):
        bound = body.assign_parameters([binding[0]])
        reference = simulator.run(bound).result().data()["probabilities"]
        assert np.allclose(row, reference, atol=1e-9), np.abs(row - reference).max()
    assert not np.allclose(ours[0], ours[1], atol=1e-3)
    # Negative control: without the stated error the law differs.
    plain = circuit.copy_empty_like()
    for instruction in circuit.data:
        if instruction.name != "quantum_channel":
            plain.append(instruction)
    other = compile_small_group(
        plain, tuple(range(width)), tuple(range(width)), NoiseChannels(model), values, {theta: 0}
    )
    assert other is not None and not np.allclose(other.probabilities(), ours, atol=1e-4)


def test_bindings_beyond_one_chunk_give_the_same_law(monkeypatch: pytest.MonkeyPatch) -> None:
    theta = Parameter("θ")
    circuit = layered_circuit(5, theta)
    values = np.linspace(0, 3, 7)[:, None]
    args = (circuit, tuple(range(5)), tuple(range(5)), NoiseChannels(noisy_model()), values, {theta: 0})
    whole = compile_small_group(*args)
    assert whole is not None
    monkeypatch.setattr(small_groups, "CHUNK_AMPLITUDES", 2 * 4**5)  # chunks of 2 bindings
    chunked = compile_small_group(*args)
    assert chunked is not None
    assert np.allclose(whole.probabilities(), chunked.probabilities(), atol=1e-12)


def test_a_sweep_whose_blocks_would_not_fit_goes_to_aer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-binding superoperators are bounded: past ``MAX_BINDING_BYTES`` the group runs on Aer."""
    theta = Parameter("θ")
    circuit = layered_circuit(4, theta)
    values = np.linspace(0, 3, 64)[:, None]
    args = (circuit, tuple(range(4)), tuple(range(4)), NoiseChannels(noisy_model()), values, {theta: 0})
    assert compile_small_group(*args) is not None
    monkeypatch.setattr(small_groups, "MAX_BINDING_BYTES", 64 * 4096)  # fewer than one block per gate
    assert compile_small_group(*args) is None


def test_a_six_qubit_group_of_a_wide_circuit_runs_here_with_aers_law(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the engine: a noisy 6-qubit group of a 127-qubit circuit, with many bindings, is
    predicted faster here than on Aer, runs here, and samples Aer's law (Aer's density matrix
    of the same circuit, idle qubits truncated, as the reference)."""
    theta = Parameter("θ")
    qubits = coupled(BACKEND, 6)
    circuit = wide_circuit(qubits, theta)
    values = np.array([[0.0], [math.pi / 3], [2.1]])
    group = independent_components(circuit)[0]  # type: ignore[index]
    assert len(group.qubits) == 6
    engine = AerEngine()

    def no_aer(*args: object, **kwargs: object) -> None:
        raise AssertionError("the group went to Aer")

    with monkeypatch.context() as patch:
        patch.setattr(aer_engine.AerSamplerV2, "from_backend", no_aer)
        ours = engine.run_group(BACKEND, None, circuit, group, values, {theta: 0}, SHOTS, 11)
    assert engine.report.methods == {"density_matrix": 1}, engine.report.methods
    simulator = AerSimulator(method="density_matrix", noise_model=backend_noise_model(BACKEND))
    for binding, sampled in zip(values, law(ours), strict=True):
        bound = circuit.assign_parameters([binding[0]])
        counts = simulator.run(bound, shots=SHOTS, seed_simulator=5).result().get_counts()
        # Aer's keys put clbit 0 last; ours list clbit 0 first.
        reference = {key[::-1]: value / SHOTS for key, value in counts.items()}
        # 60k shots over 64 outcomes: two samples of one law differ by about 0.02 in TVD.
        assert tvd(sampled, reference) < 0.045, (sampled, reference)
