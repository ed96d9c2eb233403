"""Noisy Clifford circuits wider than a density matrix allows run on the stabilizer method.

The engine replaces errors the stabilizer method cannot apply by their Pauli twirl and states a
bound on how far any expectation value can move. These tests compare its values with the
full-noise density matrix (12 qubits), check the bound and the report, and test the twirl itself
against Pauli fidelities computed independently (Pauli transfer matrices).
"""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.primitives import PrimitiveResult
from qiskit.quantum_info import PTM, SparsePauliOp, StabilizerState
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_aer.noise import NoiseModel, pauli_error, thermal_relaxation_error

from bench import tutorials
from qiskit_runtime_server.worker.engines.aer import AerEngine, fake_backend
from qiskit_runtime_server.worker.engines.clifford import pauli_twirl
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs.primitives import run_estimator
from tests.unit.test_light_cones import CHAIN, exact_z_expectations, kicked_ising_pub, params

BACKEND = "fake_sherbrooke"


def isa(circuit: QuantumCircuit) -> QuantumCircuit:
    manager = generate_preset_pass_manager(
        optimization_level=1,
        backend=fake_backend(BACKEND),
        initial_layout=CHAIN[: circuit.num_qubits],
        seed_transpiler=5,
    )
    return manager.run(circuit)


def mirror(n: int, layers: int = 2, seed: int = 4) -> QuantumCircuit:
    """Random single-qubit Cliffords and CX layers on a path, a barrier, then the inverse (ideal
    state |0...0>)."""
    rng = np.random.default_rng(seed)
    half = QuantumCircuit(n)
    for _ in range(layers):
        for q in range(n):
            for gate in rng.choice(["h", "s", "x", "sdg"], size=2):
                getattr(half, str(gate))(q)
        for start in (0, 1):
            for a in range(start, n - 1, 2):
                half.cx(a, a + 1)
    qc = half.copy()
    qc.barrier()
    qc.compose(half.inverse(), inplace=True)
    return qc


def z_observable(qubits: list[int]) -> SparsePauliOp:
    return SparsePauliOp.from_sparse_list([("Z" * len(qubits), qubits, 1.0)], num_qubits=127)


def run_on_stabilizer(
    circuit: QuantumCircuit, supports: list[list[int]], precision: float
) -> tuple[np.ndarray, np.ndarray, dict[str, object], list[str]]:
    engine = AerEngine()
    observables = [z_observable(s) for s in supports]
    output = run_estimator(
        params([(circuit, observables)], default_precision=precision, simulator={"seed_simulator": 17}),
        BACKEND,
        engine,
        Defaults(),
    )
    result = output.result
    assert isinstance(result, PrimitiveResult)
    # Terms with wide cones run together on the stabilizer method; terms whose cones are narrow
    # (estimator_cones.py) may run as exact density matrices beside them.
    assert engine.report.methods["stabilizer"] == 1, engine.report.methods
    assert set(engine.report.methods) <= {"stabilizer", "density_matrix"}
    simulator = result.metadata["simulator"]
    return np.asarray(result[0].data.evs), np.asarray(result[0].data.stds), simulator, engine.report.log_lines()


def check_against_density_matrix(circuit: QuantumCircuit, supports: list[list[int]], precision: float) -> None:
    evs, stds, simulator, log = run_on_stabilizer(circuit, supports, precision)
    approximation = simulator["approximation"]
    assert approximation["kind"] == "pauli_twirl"
    assert approximation["errors_twirled"] > 0
    bound = approximation["expectation_value_bound"]
    assert 0 < approximation["largest_error_distance"] <= bound < 1
    assert approximation["largest_error"]["qubits"] and set(approximation["largest_error"]["qubits"]) <= set(CHAIN)
    assert simulator["methods"]["stabilizer"] == 1
    assert simulator["predicted_seconds"] > 0
    assert len(log) == 1 and "Pauli twirl" in log[0] and f"{bound:.3g}" in log[0]
    reference = exact_z_expectations(circuit, supports, np.zeros((1, 0)), BACKEND)[0]
    assert (np.abs(evs - reference) <= 5 * stds + bound).all(), (evs, reference, stds, bound)
    # The stated bound is loose but the values are close: well within shot noise plus a tenth of it.
    assert (np.abs(evs - reference) <= 5 * stds + 0.1 * bound).all(), (evs, reference, stds, bound)


def test_ghz_12_qubits_on_stabilizer_matches_full_noise() -> None:
    circuit = isa(tutorials.ghz(12))
    layout = circuit.layout.final_index_layout()
    # Z on all 12 qubits too: with every qubit of the wide piece measured, none can be traced out
    # early (qubit_reuse.py would otherwise fit the piece on 6 wires, exactly), so the piece takes
    # the stabilizer method.
    supports = [[layout[0], layout[i]] for i in range(1, 12)] + [[layout[i] for i in range(12)]]
    check_against_density_matrix(circuit, supports, precision=0.015)


def exact_quarter_turns(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` with every rz angle rounded to an exact multiple of pi/2 (as a float)."""
    out = circuit.copy_empty_like()
    for instruction in circuit.data:
        if instruction.operation.name == "rz":
            turns = round(float(instruction.operation.params[0]) / (np.pi / 2))
            out.rz(turns * (np.pi / 2), instruction.qubits)
        else:
            out.append(instruction)
    return out


def mirror_supports(circuit: QuantumCircuit) -> list[list[int]]:
    """A few one- and two-qubit Z terms plus Z on every qubit: with every qubit measured, no
    qubit can be traced out early (qubit_reuse.py), so the group takes the stabilizer method."""
    layout = circuit.layout.final_index_layout()
    few = [[layout[i]] for i in (0, 5, 10)] + [[layout[0], layout[i]] for i in (3, 7, 10)]
    return [*few, [layout[i] for i in range(11)]]


def test_mirror_with_few_measured_qubits_runs_exactly() -> None:
    circuit = isa(mirror(11))
    layout = circuit.layout.final_index_layout()
    supports = [[layout[0]], [layout[0], layout[1]]]
    engine = AerEngine()
    output = run_estimator(
        params([(circuit, [z_observable(s) for s in supports])], default_precision=0.015), BACKEND, engine, Defaults()
    )
    result = output.result
    assert isinstance(result, PrimitiveResult)
    simulator = result.metadata["simulator"]
    # Few measured qubits: their light cone is narrow late, so the group runs as an exact density
    # matrix (on its cone, or on reused wires), with nothing approximated.
    assert simulator["methods"] == {"density_matrix": 1}, simulator
    assert "approximation" not in simulator and engine.report.log_lines() == []
    evs, stds = np.asarray(result[0].data.evs), np.asarray(result[0].data.stds)
    reference = exact_z_expectations(circuit, supports, np.zeros((1, 0)), BACKEND)[0]
    assert (np.abs(evs - reference) <= 5 * stds).all(), (evs, reference, stds)


def test_mirror_clifford_11_qubits_on_stabilizer_matches_full_noise() -> None:
    circuit = isa(mirror(11))
    supports = mirror_supports(circuit)
    check_against_density_matrix(exact_quarter_turns(circuit), supports, precision=0.015)


def test_mirror_clifford_as_transpiled_runs_on_stabilizer() -> None:
    circuit = isa(mirror(11))
    check_against_density_matrix(circuit, mirror_supports(circuit), precision=0.015)


def pauli_fidelities(channel: object) -> np.ndarray:
    """Diagonal of the Pauli transfer matrix (qiskit's PTM, independent of ``pauli_twirl``)."""
    return np.real(np.diag(PTM(channel).data))  # type: ignore[arg-type]


def test_pauli_error_twirls_to_itself() -> None:
    error = pauli_error([("IX", 0.05), ("ZY", 0.02), ("II", 0.93)])
    twirled = pauli_twirl(error)
    assert twirled.distance == pytest.approx(0, abs=1e-9)
    np.testing.assert_allclose(
        pauli_fidelities(twirled.error.to_quantumchannel()), pauli_fidelities(error.to_quantumchannel()), atol=1e-12
    )


@pytest.mark.parametrize(("t1", "t2", "time"), [(100e-6, 150e-6, 2e-6), (80e-6, 120e-6, 40e-6)])
def test_thermal_relaxation_twirl_keeps_pauli_fidelities(t1: float, t2: float, time: float) -> None:
    error = thermal_relaxation_error(t1, t2, time)
    twirled = pauli_twirl(error)
    assert twirled.distance > 1e-4  # amplitude damping is not a Pauli channel
    # The Choi trace norm of a difference of two channels is at most 2.
    assert twirled.distance <= 2
    original = pauli_fidelities(error.to_quantumchannel())
    np.testing.assert_allclose(pauli_fidelities(twirled.error.to_quantumchannel()), original, atol=1e-9)
    assert original[3] < 1  # Z is damped too: the test sees a real channel
    # Only Paulis remain.
    labels = {instruction.operation.name for circuit in twirled.error.circuits for instruction in circuit.data}
    assert labels <= {"id", "x", "y", "z", "pauli"}


def test_two_qubit_twirl_of_relaxation_keeps_fidelities() -> None:
    error = thermal_relaxation_error(100e-6, 150e-6, 5e-6).tensor(thermal_relaxation_error(60e-6, 90e-6, 5e-6))
    twirled = pauli_twirl(error)
    assert twirled.distance > 1e-4
    np.testing.assert_allclose(
        pauli_fidelities(twirled.error.to_quantumchannel()), pauli_fidelities(error.to_quantumchannel()), atol=1e-9
    )


# ---- Kicked Ising at its Clifford points, five steps ----


PRECISION = 0.05


def kicked_ising_run(theta: float, noise_model: NoiseModel | None) -> tuple[float, float, float]:
    """(ev, std, stabilizer-formalism ideal) of Z62 after five steps at a Clifford point."""
    circuit, observable = kicked_ising_pub(5)
    bound = circuit.assign_parameters([theta]).remove_final_measurements(inplace=False)
    ideal = float(np.real(StabilizerState(bound).expectation_value(observable.paulis[0])))
    simulator: dict[str, object] = {"seed_simulator": 23}
    if noise_model is not None:
        simulator["noise_model"] = noise_model
    output = run_estimator(
        params([(circuit, observable, np.array([[theta]]))], default_precision=PRECISION, simulator=simulator),
        BACKEND,
        AerEngine(),
        Defaults(),
    )
    result = output.result
    assert isinstance(result, PrimitiveResult)
    return float(result[0].data.evs[0]), float(result[0].data.stds[0]), ideal


@pytest.mark.parametrize("theta", [0.0, np.pi / 2])
def test_kicked_ising_clifford_points_noisy_within_ideal(theta: float) -> None:
    ev, std, ideal = kicked_ising_run(theta, None)
    assert abs(ev) <= abs(ideal) + 4 * max(std, PRECISION / 4), (ev, ideal, std)
    if theta == 0.0:
        assert ideal == 1.0 and ev > 4 * std  # |0...0> is a fixed point: damped, not lost


@pytest.mark.parametrize("theta", [0.0, np.pi / 2])
def test_kicked_ising_clifford_points_ideal_match_stabilizer_formalism(theta: float) -> None:
    ev, std, ideal = kicked_ising_run(theta, NoiseModel())
    assert abs(ev - ideal) <= 4 * max(std, PRECISION / 4), (ev, ideal, std)
