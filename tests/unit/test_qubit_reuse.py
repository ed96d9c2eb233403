"""Qubit reuse (worker/engines/qubit_reuse.py): tracing a qubit out after its last gate and
resetting its wire for the next leaves the measured law exactly as the whole circuit's, under the
backend's full noise model."""

from __future__ import annotations

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit
from qiskit_aer import AerSimulator

from qiskit_runtime_server.worker.engines.aer import AerEngine, backend_noise_model
from qiskit_runtime_server.worker.engines.compaction import reduce_noise_model, used_instructions
from qiskit_runtime_server.worker.engines.qubit_reuse import on_wires, schedule

BACKEND = "fake_sherbrooke"
# A path of fake_sherbrooke's coupling map, in order.
PATH = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]


def staircase(n: int, measured: list[int]) -> QuantumCircuit:
    """Rotations on every qubit, then a CX staircase along the path: every qubit is in the cone of
    the last one, but at most a few are between their first and last gate at once."""
    circuit = QuantumCircuit(n)
    for q in range(n):
        circuit.rx(0.3 + 0.2 * q, q)
    for q in range(n - 1):
        circuit.cx(q, q + 1)
        circuit.ry(0.4, q + 1)
    register = ClassicalRegister(len(measured), "c")
    circuit.add_register(register)
    for bit, q in enumerate(measured):
        circuit.measure(q, register[bit])
    return circuit


def isa_staircase(n: int, measured: list[int]) -> QuantumCircuit:
    """:func:`staircase` as an ISA circuit of fake_sherbrooke on ``PATH``, compacted to ``n`` qubits
    (qubit ``i`` is physical ``PATH[i]``)."""
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_ibm_runtime.fake_provider import FakeSherbrooke

    from qiskit_runtime_server.worker.engines.compaction import compact_circuit

    manager = generate_preset_pass_manager(optimization_level=1, backend=FakeSherbrooke(), initial_layout=PATH[:n])
    return compact_circuit(manager.run(staircase(n, measured)), PATH[:n])


def _noise(circuit: QuantumCircuit):  # type: ignore[no-untyped-def]
    used = frozenset((name, tuple(PATH[i] for i in qubits)) for name, qubits in used_instructions([circuit]))
    return reduce_noise_model(backend_noise_model(BACKEND), PATH[: circuit.num_qubits], used)


def _probabilities(circuit: QuantumCircuit, noise) -> dict[str, float]:  # type: ignore[no-untyped-def]
    simulator = AerSimulator(method="density_matrix", noise_model=noise)
    counts = simulator.run(circuit, shots=200_000, seed_simulator=3).result().get_counts()
    total = sum(counts.values())
    return {key: value / total for key, value in counts.items()}


def test_schedule_needs_far_fewer_wires_than_qubits() -> None:
    plan = schedule(staircase(10, [9]))
    assert plan is not None
    assert plan.width <= 3 < 10
    assert plan.starts  # some wires were reset and reused


def test_schedule_refuses_what_it_cannot_keep_exact() -> None:
    mid = staircase(4, [1])
    mid.x(1)  # a gate after the measurement of its qubit
    assert schedule(mid) is None
    delayed = staircase(4, [3])
    delayed.delay(100, 0)
    assert schedule(delayed) is None


def test_reused_wires_give_the_whole_circuits_law_under_full_noise() -> None:
    circuit = isa_staircase(10, [9, 8])
    noise = _noise(circuit)
    assert {"ecr", "sx"} <= {name for name, _ in used_instructions([circuit])}  # gates carry noise
    plan = schedule(circuit)
    assert plan is not None and plan.width < circuit.num_qubits
    wired, readout = on_wires(circuit, plan, noise)
    assert wired.num_qubits == plan.width
    whole = _probabilities(circuit, noise)
    reused = AerSimulator(method="density_matrix", noise_model=readout).run(wired, shots=200_000, seed_simulator=5)
    counts = reused.result().get_counts()
    total = sum(counts.values())
    for key in set(whole) | set(counts):
        p, q = whole.get(key, 0.0), counts.get(key, 0) / total
        # 200k shots each: 5 standard errors of a difference of two frequencies.
        assert abs(p - q) <= 5 * np.sqrt(2 * max(p, 1e-4) / 200_000), (key, p, q)


def test_engine_takes_reuse_for_a_wide_noisy_group_and_reports_it() -> None:
    from qiskit.primitives.containers.sampler_pub import SamplerPub
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_ibm_runtime.fake_provider import FakeSherbrooke

    path = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    manager = generate_preset_pass_manager(optimization_level=1, backend=FakeSherbrooke(), initial_layout=path)
    circuit = manager.run(staircase(12, [11]))
    engine = AerEngine()
    engine.begin_job()
    result = engine.sample(BACKEND, [SamplerPub.coerce(circuit, 2000)], shots=2000, seed=1, noise_model=None)
    assert engine.report.reused == 1
    assert dict(engine.report.methods) == {"density_matrix": 1}
    assert engine.report.widest == 12
    assert sum(result[0].data.c.get_counts().values()) == 2000
