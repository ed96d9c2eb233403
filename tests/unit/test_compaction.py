"""Compacted simulation (only the active qubits, reduced noise model) agrees with the full one."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import SparsePauliOp

from qiskit_runtime_server.worker.engines.aer import AerEngine
from qiskit_runtime_server.worker.engines.compaction import active_qubits, compact_circuit

BACKEND = "fake_lagos"  # 7 qubits: compaction matters, the full model stays cheap to simulate
SHOTS = 20_000


def total_variation(a: dict[str, int], b: dict[str, int]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


def dynamic_circuit() -> QuantumCircuit:
    """Mid-circuit measurement, reset, a conditional, barriers, registers in an unusual order."""
    q = QuantumRegister(7, "q")
    late = ClassicalRegister(1, "late")
    mid = ClassicalRegister(2, "mid")
    qc = QuantumCircuit(q, late, mid)
    qc.sx(q[2])
    qc.rz(0.3, q[2])
    qc.sx(q[2])
    qc.measure(q[2], mid[0])
    qc.reset(q[2])
    qc.barrier()
    with qc.if_test((mid[0], 1)):
        qc.x(q[5])
    qc.x(q[2])
    qc.measure(q[5], mid[1])
    qc.barrier(q[1], q[2])
    qc.measure(q[2], late[0])
    return qc


def test_active_qubits_and_compaction_keep_classical_layout() -> None:
    qc = dynamic_circuit()
    assert active_qubits(qc) == {2, 5}
    compact = compact_circuit(qc, [2, 5])
    assert compact.num_qubits == 2
    assert [c.name for c in compact.cregs] == ["late", "mid"]
    assert compact.num_clbits == qc.num_clbits
    assert compact.count_ops()["measure"] == 3


@pytest.mark.parametrize("circuit", [dynamic_circuit], ids=["dynamic"])
def test_compacted_sampling_matches_full(circuit) -> None:  # type: ignore[no-untyped-def]
    qc = circuit()
    full = AerEngine(compact=False).sample(
        BACKEND, [SamplerPub.coerce(qc, SHOTS)], shots=SHOTS, seed=11, noise_model=None
    )
    compact = AerEngine().sample(BACKEND, [SamplerPub.coerce(qc, SHOTS)], shots=SHOTS, seed=12, noise_model=None)
    for name in ("late", "mid"):
        a, b = full[0].data[name].get_counts(), compact[0].data[name].get_counts()
        assert set(b) <= {"0", "1", "00", "01", "10", "11"}
        assert total_variation(a, b) < 0.03, (name, a, b)
    # The conditional really fired: q5 follows the mid-circuit outcome (0.5 without it; noise lowers 1.0).
    mid = compact[0].data["mid"].get_counts()
    assert mid.get("11", 0) + mid.get("00", 0) > 0.65 * SHOTS


def test_compacted_estimation_matches_full() -> None:
    qc = QuantumCircuit(7)
    qc.sx(1)
    qc.rz(np.pi / 2, 1)
    qc.sx(1)
    qc.cx(1, 3)
    observables = [SparsePauliOp("IIIZIZI"), SparsePauliOp("IIIXIXI"), SparsePauliOp("ZIIIIII")]
    pub = EstimatorPub.coerce((qc, observables), 0.005)
    full = AerEngine(compact=False).estimate(BACKEND, [pub], precision=0.005, seed=3, noise_model=None)
    compact = AerEngine().estimate(BACKEND, [pub], precision=0.005, seed=4, noise_model=None)
    np.testing.assert_allclose(compact[0].data.evs, full[0].data.evs, atol=0.04)
    # Qubit 6 is idle but observed: it stays in the simulation and reads +1 less its readout error.
    from qiskit_ibm_runtime.fake_provider import FakeLagosV2

    readout = FakeLagosV2().properties().readout_error(6)
    assert compact[0].data.evs[2] == pytest.approx(1 - 2 * readout, abs=0.03)


def test_wide_circuits_pick_a_method_that_scales() -> None:
    from qiskit_aer.noise import NoiseModel

    ghz = QuantumCircuit(40)
    ghz.h(0)
    for q in range(39):
        ghz.cx(q, q + 1)
    ghz.measure_all()
    engine = AerEngine()
    result = engine.sample(
        "fake_sherbrooke", [SamplerPub.coerce(ghz, 200)], shots=200, seed=1, noise_model=NoiseModel()
    )
    assert set(result[0].data.meas.get_counts()) == {"0" * 40, "1" * 40}

    rotated = ghz.remove_final_measurements(inplace=False)
    for q in range(40):
        rotated.rz(0.1, q)
    rotated.measure_all()
    result = engine.sample(
        "fake_sherbrooke", [SamplerPub.coerce(rotated, 200)], shots=200, seed=1, noise_model=NoiseModel()
    )
    assert set(result[0].data.meas.get_counts()) == {"0" * 40, "1" * 40}


def test_reduced_model_holds_only_the_job_instructions() -> None:
    from qiskit_runtime_server.worker.engines.aer import backend_noise_model
    from qiskit_runtime_server.worker.engines.compaction import reduce_noise_model, used_instructions

    qc = dynamic_circuit()
    used = used_instructions([qc])
    assert ("x", (5,)) in used  # inside the if_test block, mapped to the outer qubit
    reduced = reduce_noise_model(backend_noise_model(BACKEND), [2, 5], used)
    assert reduced is not None
    names = {error["operations"][0] for error in reduced.to_dict()["errors"] if error["type"] == "qerror"}
    assert names <= {"x", "sx", "reset"}
    assert reduced.to_dict() is reduced.to_dict()  # serialised once
