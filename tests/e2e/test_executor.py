"""The client's current primitives (program ``executor``) against the server, embedded and split.

``executor_sampler.Sampler``, ``executor_estimator.Estimator`` and the raw ``Executor`` with a
``QuantumProgram``; results are checked against statevector truth within statistical bounds
(the backend's noise model is on, so the bounds also leave room for its small errors).
"""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit.transpiler import generate_preset_pass_manager

pytestmark = pytest.mark.e2e


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    return qc


def total_variation(counts: dict[str, int], truth: dict[str, float]) -> float:
    shots = sum(counts.values())
    keys = set(counts) | set(truth)
    return 0.5 * sum(abs(counts.get(k, 0) / shots - truth.get(k, 0.0)) for k in keys)


def test_sampler_docstring_example(service) -> None:
    # The example of qiskit_ibm_runtime.executor_sampler.Sampler. Its circuit is not ISA (h on
    # virtual qubits), which IBM refuses: unchanged it fails with IBM's error; transpiled it runs.
    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError
    from qiskit_ibm_runtime.executor_sampler import Sampler

    backend = service.least_busy(operational=True, simulator=False)

    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()

    sampler = Sampler(mode=backend)
    sampler.options.default_shots = 2048
    sampler.options.execution.init_qubits = True
    with pytest.raises(RuntimeJobFailureError, match=r"Error code 1517.*is not supported by the target system"):
        sampler.run([circuit]).result()
    job = sampler.run([generate_preset_pass_manager(backend=backend, optimization_level=1).run(circuit)])
    result = job.result()

    counts = result[0].join_data().get_counts()
    assert sum(counts.values()) == 2048


@pytest.mark.parametrize("num_randomizations", [None, 4])
def test_sampler_bell_plain_and_twirled(service, num_randomizations: int | None) -> None:
    from qiskit_ibm_runtime.executor_sampler import Sampler

    backend = service.backend("fake_manila")
    qc = bell()
    truth = Statevector(qc).probabilities_dict()
    qc.measure_all()
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    sampler = Sampler(mode=backend)
    if num_randomizations:
        sampler.options.twirling.enable_gates = True
        sampler.options.twirling.enable_measure = True
        sampler.options.twirling.num_randomizations = num_randomizations
    result = sampler.run([isa], shots=4000).result()
    counts = result[0].data.meas.get_counts()
    assert sum(counts.values()) == 4000
    assert total_variation(counts, truth) < 0.12
    assert counts.get("01", 0) + counts.get("10", 0) > 0  # noisy by default


def test_sampler_seed_is_honoured(service) -> None:
    from qiskit_ibm_runtime.executor_sampler import Sampler

    backend = service.backend("fake_manila")
    qc = bell()
    qc.measure_all()
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    sampler = Sampler(mode=backend)
    sampler.options.simulator.seed_simulator = 11
    first = sampler.run([isa], shots=500).result()[0].data.meas.get_counts()
    second = sampler.run([isa], shots=500).result()[0].data.meas.get_counts()
    assert first == second


def test_estimator_docstring_example(service) -> None:
    # The example of qiskit_ibm_runtime.executor_estimator.Estimator. Its circuit is not ISA,
    # which IBM refuses: unchanged it fails with IBM's error; transpiled (as the module's own
    # "Example 1" does) it runs.
    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError
    from qiskit_ibm_runtime.executor_estimator import Estimator

    backend = service.least_busy(operational=True, simulator=False)

    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)

    observable = SparsePauliOp.from_list([("ZZ", 1), ("XX", 1)])

    estimator = Estimator(mode=backend)
    estimator.options.default_precision = 0.01
    estimator.options.execution.init_qubits = True
    with pytest.raises(RuntimeJobFailureError, match=r"Error code 1517.*is not supported by the target system"):
        estimator.run([(circuit, observable)]).result()
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(circuit)
    job = estimator.run([(isa, observable.apply_layout(isa.layout))])
    result = job.result()

    assert float(result[0].data.evs) == pytest.approx(2.0, abs=0.3)


@pytest.mark.parametrize("mitigation", ["default", "none", "trex", "trex+gate-twirling"])
def test_estimator_bell_against_statevector(service, mitigation: str) -> None:
    """Default options (TREX at resilience level 1), no mitigation, explicit TREX, TREX with gate twirling."""
    from qiskit_ibm_runtime.executor_estimator import Estimator

    backend = service.backend("fake_manila")
    qc = bell()
    observables = SparsePauliOp.from_list([("ZZ", 1.0), ("XX", 0.5), ("ZI", 1.0)])
    truth = Statevector(qc).expectation_value(observables).real
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    estimator = Estimator(mode=backend)
    if mitigation == "none":
        estimator.options.resilience_level = 0
    elif mitigation.startswith("trex"):
        estimator.options.resilience_level = 0
        estimator.options.resilience.measure_mitigation = True
        estimator.options.twirling.enable_measure = True
        estimator.options.twirling.enable_gates = mitigation.endswith("gate-twirling")
    result = estimator.run([(isa, observables.apply_layout(isa.layout))], precision=0.02).result()
    value = float(result[0].data.evs)
    if mitigation == "none":
        # Unmitigated: readout and gate noise pull every term towards zero.
        assert truth - 0.5 < value < truth
    else:
        assert value == pytest.approx(truth, abs=0.12)


def test_estimator_parameter_sweep(service) -> None:
    from qiskit_ibm_runtime.executor_estimator import Estimator

    backend = service.backend("fake_manila")
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.ry(theta, 0)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    values = np.linspace(0, np.pi, 4).reshape(4, 1)
    obs = SparsePauliOp("Z").apply_layout(isa.layout)
    evs = Estimator(mode=backend).run([(isa, obs, values)], precision=0.03).result()[0].data.evs
    assert evs.shape == (4,)
    np.testing.assert_allclose(evs, np.cos(values.ravel()), atol=0.15)


def test_executor_circuit_item_with_sweep(service) -> None:
    from qiskit_ibm_runtime import Executor, QuantumProgram
    from qiskit_ibm_runtime.results import QuantumProgramResult

    backend = service.backend("fake_manila")
    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.measure_all()
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    values = np.array([[0.0], [np.pi / 2], [np.pi]])
    program = QuantumProgram(shots=3000)
    program.append_circuit_item(isa, circuit_arguments=values)

    executor = Executor(backend)
    executor.options.environment.job_tags = ["my_tag"]
    job = executor.run(program)
    result = job.result()

    assert isinstance(result, QuantumProgramResult)
    bits = result[0]["meas"]
    assert bits.shape == (3, 3000, 2) and bits.dtype == bool
    for row, theta_value in zip(bits, values.ravel(), strict=True):
        p11 = float(np.mean(row[:, 0] & row[:, 1]))
        assert p11 == pytest.approx(np.sin(theta_value / 2) ** 2, abs=0.08)
    spans = result.metadata.chunk_timing
    assert spans and spans[0].stop >= spans[0].start
    again = service.job(job.job_id())
    assert again.tags == ["my_tag"]
    assert isinstance(again.inputs["quantum_program"], QuantumProgram)


def test_unrunnable_program_fails_the_job_not_the_worker(service) -> None:
    from qiskit_ibm_runtime import Executor, QuantumProgram
    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

    backend = service.backend("fake_manila")
    qc = QuantumCircuit(1)
    qc.x(0)
    qc.measure_all()
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    program = QuantumProgram(shots=10, meas_level="kerneled")
    program.append_circuit_item(isa)
    job = Executor(backend).run(program)
    with pytest.raises(RuntimeJobFailureError, match="meas_level 'kerneled' is not available on a simulator"):
        job.result()
    assert job.status() == "ERROR"

    program = QuantumProgram(shots=10)
    program.append_circuit_item(isa)
    assert Executor(backend).run(program).result()[0]["meas"].shape == (10, 1)


@pytest.mark.parametrize("backend_name", ["fake_kolkata", "fake_sherbrooke", "fake_fez"])
def test_estimator_on_real_size_backends(service, backend_name: str) -> None:
    """The client's default Estimator measures every qubit of the device (27, 127, 156 here):
    it must finish quickly and mitigate as on the small backend."""
    from qiskit_ibm_runtime.executor_estimator import Estimator

    backend = service.backend(backend_name)
    qc = bell()
    observables = SparsePauliOp.from_list([("ZZ", 1.0), ("XX", 1.0)])
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1, seed_transpiler=3).run(qc)
    job = Estimator(mode=backend).run([(isa, observables.apply_layout(isa.layout))], precision=0.02)
    result = job.result(timeout=120)
    assert float(result[0].data.evs) == pytest.approx(2.0, abs=0.15)
    assert job.metrics()["num_pubs"] == 2  # the PUB's item and TREX's calibration item
