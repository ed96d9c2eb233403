"""Utility-scale shapes through the unmodified client over real HTTP (docs/simulation.md).

A 100-qubit GHZ estimator job runs on the stabilizer method with the Pauli-twirled noise stated in
its metadata and job log; a kicked Ising ``Z62`` on all 127 qubits of fake_sherbrooke runs on its
5-qubit light cone; and a job predicted to simulate longer than ``QRS_MAX_JOB_SECONDS`` fails at
once, naming the prediction and the method.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from tests.conftest import Deployment, embedded_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    # A cap the 100-qubit GHZ fits under and a 16-qubit noisy statevector does not. The ``service``
    # fixture of tests/conftest.py connects the unmodified client to this server.
    with embedded_server(tmp_path_factory.mktemp("utility"), QRS_MAX_JOB_SECONDS="120") as running:
        yield running


def _kicked_ising(backend, steps: int) -> tuple[QuantumCircuit, Parameter]:  # type: ignore[no-untyped-def]
    """Kim et al.'s kicked Ising: RX(theta) on every qubit, then RZZ(-pi/2) on every coupling.

    The couplings are layered first-fit in sorted order (``bench/tutorials.py`` colours them
    properly instead): on fake_sherbrooke the 2-step cone of ``Z62`` then fits 6 wires, which keeps
    this test to seconds; the bench's layering needs 9."""
    theta = Parameter("theta")
    n = backend.num_qubits
    edges = sorted({tuple(sorted(edge)) for edge in backend.coupling_map.get_edges()})
    layers: list[list[tuple[int, int]]] = []
    for edge in edges:
        layer = next((lay for lay in layers if all(q not in pair for pair in lay for q in edge)), None)
        if layer is None:
            layers.append([edge])
        else:
            layer.append(edge)
    circuit = QuantumCircuit(n)
    for _ in range(steps):
        circuit.rx(theta, range(n))
        for layer in layers:
            for a, b in layer:
                circuit.rzz(-math.pi / 2, a, b)
    return circuit, theta


def test_hello_world_ghz_100_runs_on_the_stabilizer_method_and_says_so(service) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import EstimatorV2

    backend = service.backend("fake_sherbrooke")
    n = 100
    circuit = QuantumCircuit(n)
    circuit.h(0)
    for i in range(n - 1):
        circuit.cx(i, i + 1)
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)
    # The tutorial's 99 observables <Z0 Zi>: every qubit is measured, so no wire can be reused
    # and the wide piece takes the stabilizer method (with 3 of them it runs exactly on reused wires).
    observables = [
        SparsePauliOp.from_sparse_list([("ZZ", [0, i], 1.0)], n).apply_layout(isa.layout) for i in range(1, n)
    ]
    estimator = EstimatorV2(mode=backend)
    estimator.options.resilience_level = 1
    job = estimator.run([(isa, observables)])
    result = job.result()
    evs = np.asarray(result[0].data.evs)
    stds = np.asarray(result[0].data.stds)
    simulator = result.metadata["simulator"]
    assert simulator["methods"].get("stabilizer", 0) >= 1
    assert simulator["stabilizer_sampler"] == "stim"
    approximation = simulator["approximation"]
    assert approximation["kind"] == "pauli_twirl" and approximation["errors_twirled"] > 0
    assert 0 < approximation["largest_error_distance"] <= approximation["expectation_value_bound"]
    assert simulator["predicted_seconds"] > 0
    # Ideal <Z0 Zi> = 1; noise (and the twirl) can only pull it towards 0, never past 1.
    assert np.all(evs <= 1 + 5 * stds + 1e-9)
    assert evs[0] > 0.5, evs  # two neighbours stay strongly correlated
    assert evs[:10].mean() > evs[-10:].mean() + 0.1, evs  # and the correlation decays with distance
    assert "Pauli twirl" in job.logs()
    assert job.metrics()["predicted_seconds"] > 0


def test_kicked_ising_127q_one_step_runs_on_its_light_cone(service) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import EstimatorV2

    backend = service.backend("fake_sherbrooke")
    circuit, _ = _kicked_ising(backend, steps=1)
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)
    observable = SparsePauliOp.from_sparse_list([("Z", [62], 1.0)], backend.num_qubits).apply_layout(isa.layout)
    thetas = np.array([[0.0], [math.pi / 4], [math.pi / 2]])
    estimator = EstimatorV2(mode=backend)
    estimator.options.resilience_level = 0
    estimator.options.default_precision = 0.02
    result = estimator.run([(isa, observable, thetas)]).result()
    evs = np.asarray(result[0].data.evs)
    stds = np.asarray(result[0].data.stds)
    ideal = np.cos(thetas.ravel())
    # After one step <Z62> = cos(theta) ideally; the local noise only shrinks it.
    assert np.all(np.abs(evs) <= np.abs(ideal) + 5 * stds)
    assert evs[0] > 0.7 and evs[1] > 0.4
    assert result.metadata["simulator"]["widest_group"] <= 10


def test_kicked_ising_127q_two_steps_runs_exactly_on_reused_wires(service) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import EstimatorV2

    backend = service.backend("fake_sherbrooke")
    circuit, _ = _kicked_ising(backend, steps=2)  # Z62's cone: 16 noisy, non-Clifford qubits
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)
    observable = SparsePauliOp.from_sparse_list([("Z", [62], 1.0)], backend.num_qubits).apply_layout(isa.layout)
    estimator = EstimatorV2(mode=backend)
    estimator.options.resilience_level = 0
    estimator.options.default_precision = 0.02
    thetas = np.array([[0.0], [math.pi / 4]])
    result = estimator.run([(isa, observable, thetas)]).result()
    evs, stds = np.asarray(result[0].data.evs), np.asarray(result[0].data.stds)
    simulator = result.metadata["simulator"]
    assert simulator["qubit_reuse"] >= 1 and "approximation" not in simulator, simulator
    # Ideal: cos(theta)**2 after two steps; the noise only shrinks it.
    ideal = np.cos(thetas.ravel()) ** 2
    assert np.all(evs <= ideal + 5 * stds) and evs[0] > 0.5 and evs[1] > 0.2, evs


def test_job_predicted_past_the_cap_fails_at_once_naming_prediction_and_method(service) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

    backend = service.backend("fake_sherbrooke")
    # 16 noisy, non-Clifford, all measured qubits: no light cone, wire reuse or stabilizer helps,
    # and a 16-qubit noisy statevector for 4096 shots takes far longer than the cap.
    circuit = QuantumCircuit(16)
    for _ in range(6):
        circuit.rx(0.3, range(16))
        for q in range(15):
            circuit.cx(q, q + 1)
    circuit.measure_all()
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)
    job = SamplerV2(mode=backend).run([isa], shots=4096)
    with pytest.raises(RuntimeJobFailureError) as failure:
        job.result()
    message = str(failure.value)
    assert "predicted to run for about" in message and "more than its limit of 120 s" in message
    assert "method" in message
