"""Independent qubit groups simulated apart agree with the whole circuit simulated at once.

Statistical tests compare the worker's factorized path with the same engine told not to
factorize (one Aer run of the whole circuit, as before) and with local testing mode's
primitives (``BackendSamplerV2``/``BackendEstimatorV2`` on the backend's noise model); the exact
single-qubit law is compared with Aer's density matrix to 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter
from qiskit.primitives import BackendEstimatorV2
from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, depolarizing_error
from qiskit_aer.noise.passes import LocalNoisePass

from qiskit_runtime_server.worker.engines.aer import AerEngine, backend_noise_model
from qiskit_runtime_server.worker.engines.partition import independent_components, noise_is_local
from qiskit_runtime_server.worker.engines.single_qubit import (
    NoiseChannels,
    compile_single_qubit,
    instructions_by_qubit,
)
from qiskit_runtime_server.worker.errors import ProgramError

BACKEND = "fake_lagos"  # 7 qubits: small enough to simulate whole as the reference
SHOTS = 20_000


def total_variation(a: dict[str, int], b: dict[str, int]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


def mixed_circuit() -> QuantumCircuit:
    """Lone qubits with mid-circuit measurement, reset and delay; a pair; a conditional joining
    two groups through a classical bit; a barrier over everything; an unmeasured qubit."""
    q = QuantumRegister(7, "q")
    mid = ClassicalRegister(3, "mid")
    out = ClassicalRegister(4, "out")
    qc = QuantumCircuit(q, mid, out)
    qc.sx(0)
    qc.rz(0.7, 0)
    qc.sx(0)
    qc.measure(0, mid[0])
    qc.reset(0)
    qc.x(0)
    qc.measure(0, out[0])
    qc.x(1)
    qc.delay(40_000, 1, unit="dt")
    qc.measure(1, out[1])
    qc.sx(2)
    qc.cx(2, 3)
    qc.barrier()
    qc.measure(2, mid[1])
    qc.sx(4)
    qc.measure(4, mid[2])
    with qc.if_test((mid[2], 1)):
        qc.x(5)
    qc.measure(5, out[2])
    qc.measure(3, out[3])
    qc.x(6)  # never measured: nothing to simulate
    return qc


def test_groups_follow_gates_and_classical_bits() -> None:
    groups = independent_components(mixed_circuit())
    assert groups is not None
    by_qubits = {group.qubits: group for group in groups}
    assert set(by_qubits) == {(0,), (1,), (2, 3), (4, 5), (6,)}
    assert by_qubits[(0,)].clbits == (0, 3)  # mid[0], out[0]
    assert by_qubits[(4, 5)].control_flow and not by_qubits[(2, 3)].control_flow
    assert by_qubits[(6,)].clbits == ()
    # Two qubits writing one classical bit are one group.
    shared = QuantumCircuit(2, 1)
    shared.measure(0, 0)
    shared.measure(1, 0)
    assert [g.qubits for g in independent_components(shared) or []] == [(0, 1)]


def test_noise_locality() -> None:
    assert noise_is_local(None)
    assert noise_is_local(backend_noise_model(BACKEND))  # errors plus RelaxationNoisePass
    model = NoiseModel()
    model._custom_noise_passes.append(LocalNoisePass(lambda op, qubits: None))
    assert not noise_is_local(model)


@pytest.mark.parametrize("measure_twice", [False, True])
def test_single_qubit_law_is_aer_density_matrix(measure_twice: bool) -> None:
    model = backend_noise_model(BACKEND)
    theta = Parameter("t")
    qc = QuantumCircuit(7, 2)
    qc.sx(3)
    qc.rz(theta, 3)
    qc.sx(3)
    qc.delay(12_000, 3, unit="dt")
    qc.x(3)
    if measure_twice:
        qc.measure(3, 1)
        qc.sx(3)
    qc.measure(3, 0)
    values = np.array([[0.3], [1.9], [-2.5]])
    program = compile_single_qubit(qc, 3, instructions_by_qubit(qc, {3})[3], NoiseChannels(model), values, {theta: 0})
    assert program is not None
    weights, outcomes = program.outcome_law()
    reference = qc.remove_final_measurements(inplace=False)
    if measure_twice:
        reference = QuantumCircuit(7, 2)
        for instruction in qc.data[:-3]:
            reference.append(instruction)
    for row, value in enumerate(values[:, 0]):
        bound = reference.assign_parameters([value])
        bound.save_probabilities([3])
        sim = AerSimulator(method="density_matrix", noise_model=model)
        expected = sim.run(bound, shots=1).result().data()["probabilities"]
        # Probability that the first measurement event reads 1 (before readout error).
        got = weights[outcomes[:, 0] == 1, row].sum() / weights[:, row].sum()
        assert got == pytest.approx(expected[1], abs=1e-9)


def test_factorized_sampling_matches_whole_circuit() -> None:
    qc = mixed_circuit()
    pub = SamplerPub.coerce(qc, SHOTS)
    whole = AerEngine(factorize=False, compact=False).sample(BACKEND, [pub], shots=SHOTS, seed=5, noise_model=None)
    split = AerEngine().sample(BACKEND, [pub], shots=SHOTS, seed=6, noise_model=None)
    for name in ("mid", "out"):
        a, b = whole[0].data[name].get_counts(), split[0].data[name].get_counts()
        assert total_variation(a, b) < 0.03, (name, a, b)
    # Joint law across registers too (the conditional couples mid[2] and out[2]).
    joint_a = whole[0].join_data().get_counts()
    joint_b = split[0].join_data().get_counts()
    assert total_variation(joint_a, joint_b) < 0.06
    out = split[0].data["out"].get_bitstrings()
    assert all(len(bits) == 4 for bits in out[:10])


def test_parameter_sweeps_run_per_binding() -> None:
    theta = Parameter("t")
    qc = QuantumCircuit(5, 3)
    qc.rx(theta, 0)
    qc.measure(0, 0)
    qc.ry(theta, 1)
    qc.cx(1, 2)
    qc.measure(1, 1)
    qc.measure(2, 2)
    values = np.array([[0.0], [np.pi / 2], [np.pi]])
    pub = SamplerPub(qc, BindingsArray({(theta,): values}), 4000)
    result = AerEngine().sample("fake_manila", [pub], shots=4000, seed=7, noise_model=NoiseModel())
    bits = result[0].data.c.to_bool_array(order="little")
    assert bits.shape == (3, 4000, 3)
    ones = bits.mean(axis=1)
    np.testing.assert_allclose(ones[:, 0], [0, 0.5, 1], atol=0.03)
    np.testing.assert_allclose(ones[:, 1], ones[:, 2], atol=1e-12)  # ideal: the pair agrees shot by shot
    assert (bits[:, :, 1] == bits[:, :, 2]).all()


def test_explicit_model_with_all_qubit_errors_is_factorized_and_correct() -> None:
    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(0.2, 1), ["x"])
    model.add_all_qubit_quantum_error(depolarizing_error(0.1, 2), ["cx"])
    qc = QuantumCircuit(4, 4)
    qc.x(0)
    qc.x(1)
    qc.cx(1, 2)
    qc.measure(range(4), range(4))
    pub = SamplerPub.coerce(qc, SHOTS)
    whole = AerEngine(factorize=False, compact=False).sample(
        "fake_manila", [pub], shots=SHOTS, seed=1, noise_model=model
    )
    split = AerEngine().sample("fake_manila", [pub], shots=SHOTS, seed=2, noise_model=model)
    assert total_variation(whole[0].data.c.get_counts(), split[0].data.c.get_counts()) < 0.03
    # depolarizing_error(0.2) is 0.8 * rho + 0.2 * I/2: qubit 0 (a lone x) reads 1 with probability 0.9.
    assert split[0].data.c.to_bool_array(order="little")[:, 0].mean() == pytest.approx(0.9, abs=0.01)


def test_estimator_matches_local_testing_mode() -> None:
    qc = QuantumCircuit(7)
    qc.sx(1)
    qc.rz(np.pi / 2, 1)
    qc.sx(1)
    qc.cx(1, 3)
    qc.x(5)
    observables = [
        SparsePauliOp.from_list([("IIIZIZI", 1.0), ("IIIXIXI", 0.5)]),
        SparsePauliOp("IZIIIII"),
        SparsePauliOp.from_list([("IZIZIZI", 2.0), ("IIIIIII", 0.25)]),
    ]
    pub = EstimatorPub.coerce((qc, observables), 0.004)
    ours = AerEngine().estimate(BACKEND, [pub], precision=0.004, seed=3, noise_model=None)[0]
    reference = (
        BackendEstimatorV2(
            backend=AerSimulator(noise_model=backend_noise_model(BACKEND)), options={"seed_simulator": 4}
        )
        .run([pub])
        .result()[0]
    )
    assert ours.data.evs.shape == reference.data.evs.shape == (3,)
    tolerance = 5 * np.hypot(ours.data.stds, reference.data.stds)
    assert (np.abs(ours.data.evs - reference.data.evs) < tolerance).all(), (ours.data.evs, reference.data.evs)
    np.testing.assert_allclose(ours.data.stds, reference.data.stds, rtol=0.2)
    assert ours.metadata["shots"] == reference.metadata["shots"]
    assert ours.metadata["target_precision"] == 0.004


def test_all_qubit_observable_on_127_qubits_completes() -> None:
    qc = QuantumCircuit(127)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    pub = EstimatorPub.coerce((qc, SparsePauliOp("X" * 127)), 0.02)
    result = AerEngine().estimate("fake_sherbrooke", [pub], precision=0.02, seed=1, noise_model=NoiseModel())
    # Ideal: <X^127> of a GHZ state on 3 qubits times |0> on the rest is 0 (the rest read +-1 at random).
    assert result[0].data.evs.shape == ()
    assert abs(float(result[0].data.evs)) < 5 * 0.02
    pub = EstimatorPub.coerce((qc, SparsePauliOp("I" * 124 + "XXX")), 0.02)
    result = AerEngine().estimate("fake_sherbrooke", [pub], precision=0.02, seed=1, noise_model=NoiseModel())
    assert float(result[0].data.evs) == pytest.approx(1.0, abs=1e-9)


def test_group_too_big_for_memory_fails_the_job_with_a_reason() -> None:
    # 24 qubits entangled all to all: no statevector within 1 MiB, no small matrix product state.
    qc = QuantumCircuit(24)
    qc.h(range(24))
    for step in (1, 5, 11):
        for q in range(24):
            qc.cx(q, (q + step) % 24)
            qc.rz(0.3 * step, (q + step) % 24)
    qc.measure_all()
    engine = AerEngine(memory_limit_mb=1)  # at most 16 qubits of statevector
    with pytest.raises(ProgramError, match=r"qubits \[0, 1, .*\(24 interacting qubits\).*matrix_product_state"):
        engine.sample("fake_sherbrooke", [SamplerPub.coerce(qc, 10)], shots=10, seed=1, noise_model=None)
    # A chain of the same width has a small bond dimension and runs within the same limit.
    chain = QuantumCircuit(24)
    chain.h(0)
    for q in range(23):
        chain.cx(q, q + 1)
    chain.measure_all()
    result = engine.sample(
        "fake_sherbrooke", [SamplerPub.coerce(chain, 50)], shots=50, seed=1, noise_model=NoiseModel()
    )
    assert set(result[0].data.meas.get_counts()) == {"0" * 24, "1" * 24}


def test_gpu_worker_sends_only_large_statevector_runs_to_the_gpu() -> None:
    from qiskit_runtime_server.worker.engines.methods import GPU_MIN_WORK, run_options

    wide = QuantumCircuit(24)
    small = QuantumCircuit(4)
    options = dict(noisy=True, device="GPU", memory_limit_mb=None, custatevec=True)
    assert run_options(wide, work=1000 * 2.0**24, **options) == {
        "method": "automatic",
        "device": "GPU",
        "max_parallel_threads": 0,
        "cuStateVec_enable": True,
    }
    assert run_options(small, work=1000 * 16, **options)["device"] == "CPU"
    assert run_options(small, work=GPU_MIN_WORK, **options)["device"] == "GPU"
    assert run_options(small, work=GPU_MIN_WORK, **options)["cuStateVec_enable"] is False  # too narrow
    # Wider than any statevector: matrix product states, which Aer only runs on the CPU.
    huge = QuantumCircuit(80)
    huge.h(0)
    huge.cx(0, 1)
    assert run_options(huge, work=2.0**90, **options)["device"] == "CPU"
    assert run_options(huge, work=2.0**90, **options)["method"] == "matrix_product_state"
    # A CPU worker never names the GPU nor cuStateVec.
    cpu = run_options(wide, work=1000 * 2.0**24, noisy=True, device="CPU", memory_limit_mb=None, custatevec=True)
    assert cpu["device"] == "CPU" and "cuStateVec_enable" not in cpu
