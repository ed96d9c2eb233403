"""Backward light cones are exact under the backend's full noise model.

Each check simulates an ISA circuit of fake_guadalupe whole and restricted to the light cone of
what it reads out, both with ``AerSimulator.from_backend`` (the full noise model: gate errors,
thermal relaxation on delays, readout errors), and compares the laws: exact probabilities to
1e-9 where the circuit ends in a final state, counts within a statistical bound where it holds
mid-circuit measurements and feed-forward. Negative controls drop one instruction that is in the
cone and see the law change, so the comparisons can fail.
"""

from __future__ import annotations

from functools import cache, partial

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.primitives import PrimitiveResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import Pauli, SparsePauliOp
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel

from bench import tutorials
from qiskit_runtime_server.worker.engines.aer import AerEngine, backend_noise_model, fake_backend
from qiskit_runtime_server.worker.engines.light_cone import Cone, backward_cone, recorded_clbits, restrict
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs import estimator_cones
from qiskit_runtime_server.worker.programs.primitives import run_estimator

BACKEND = "fake_guadalupe"  # 16 qubits: its full noise model goes to Aer in a fraction of a second
# A path of couplings (two-qubit error < 2 %, readout error < 4 %).
PATH = [6, 7, 4, 1, 2, 3, 5]
SHOTS = 30_000


@cache
def simulator(method: str) -> AerSimulator:
    return AerSimulator.from_backend(fake_backend(BACKEND), method=method)


def cx(qc: QuantumCircuit, a: int, b: int) -> None:
    assert (a, b) in fake_backend(BACKEND).target["cx"]
    qc.cx(a, b)


def rotate(qc: QuantumCircuit, qubit: int, angle: float) -> None:
    qc.sx(qubit)
    qc.rz(angle, qubit)
    qc.sx(qubit)


def final_state_circuit() -> tuple[QuantumCircuit, list[int]]:
    """A circuit whose outputs ``p0, p1`` depend on ``p0..p3`` only: ``p2`` meets ``p1`` after an
    CX with ``p3``; afterwards ``p2``..``p6`` keep interacting, get reset and idle, away from them."""
    p0, p1, p2, p3, p4, p5, p6 = PATH
    qc = QuantumCircuit(fake_backend(BACKEND).num_qubits)
    for i, q in enumerate(PATH):
        rotate(qc, q, 0.3 + 0.41 * i)
    cx(qc, p2, p3)
    cx(qc, p4, p5)
    cx(qc, p5, p6)
    qc.delay(4000, p3, unit="dt")
    cx(qc, p1, p2)
    qc.delay(6000, p1, unit="dt")
    qc.delay(3000, p4, unit="dt")
    qc.reset(p0)
    rotate(qc, p0, 1.1)
    cx(qc, p0, p1)
    rotate(qc, p1, -0.7)
    # Outside the cone from here on: gates, a reset and delays on qubits that never meet p0, p1 again.
    cx(qc, p2, p3)
    cx(qc, p3, p4)
    qc.reset(p5)
    rotate(qc, p5, 0.9)
    qc.delay(8000, p6, unit="dt")
    cx(qc, p5, p6)
    rotate(qc, p2, 2.1)
    qc.barrier()
    return qc, [p0, p1]


def probabilities(circuit: QuantumCircuit, qubits: list[int]) -> np.ndarray:
    measured = circuit.copy()
    measured.save_probabilities(qubits)
    result = simulator("density_matrix").run(measured, shots=1).result()
    return np.asarray(result.data()["probabilities"])


def test_cone_of_final_state_is_exact_under_full_noise() -> None:
    qc, read = final_state_circuit()
    cone = backward_cone(qc, qubits=read)
    assert cone is not None
    assert cone.qubits == frozenset(PATH[:4])
    dropped = len([i for i in qc.data if i.operation.name != "barrier"]) - len(cone.instructions)
    assert dropped >= 15, dropped  # the cone really leaves things out
    reduced = restrict(qc, cone)
    assert reduced.num_qubits == qc.num_qubits and reduced.num_clbits == qc.num_clbits
    full = probabilities(qc, read)
    cut = probabilities(reduced, read)
    assert abs(full.sum() - 1) < 1e-9
    np.testing.assert_allclose(cut, full, rtol=0, atol=1e-9)
    assert full.min() > 0.02  # a law worth comparing, not a point mass

    # Negative control: without the early CX on (p2, p3), which is in the cone, the law changes.
    names = [(qc.data[i].operation.name, {qc.find_bit(q).index for q in qc.data[i].qubits}) for i in cone.instructions]
    first_ecr = next(i for i, (name, on) in zip(cone.instructions, names, strict=True) if on == set(PATH[2:4]))
    damaged = restrict(qc, Cone(tuple(i for i in cone.instructions if i != first_ecr), cone.qubits))
    assert np.abs(probabilities(damaged, read) - full).max() > 1e-3
    # ... and so does dropping the delay on p1 (relaxation noise only, no gate).
    delay = next(
        i
        for i in cone.instructions
        if qc.data[i].operation.name == "delay" and qc.find_bit(qc.data[i].qubits[0]).index == PATH[1]
    )
    idle = restrict(qc, Cone(tuple(i for i in cone.instructions if i != delay), cone.qubits))
    assert np.abs(probabilities(idle, read) - full).max() > 1e-6


def feed_forward_circuit() -> QuantumCircuit:
    """A mid-circuit measurement of p2 whose outcome flips p1 (in the cone of the output through
    the classical bit); p2 is then reset and coupled to p3, and p4 drives p5 through its own
    conditional, all outside the cone."""
    p0, p1, p2, p3, p4, p5, _ = PATH
    qc = QuantumCircuit(fake_backend(BACKEND).num_qubits)
    mid = ClassicalRegister(1, "mid")
    side = ClassicalRegister(1, "side")
    out = ClassicalRegister(2, "out")
    for register in (mid, side, out):
        qc.add_register(register)
    rotate(qc, p2, 0.8)
    qc.measure(p2, mid[0])
    with qc.if_test((mid[0], 1)):
        qc.x(p1)
    qc.reset(p2)
    rotate(qc, p2, 1.3)
    cx(qc, p2, p3)
    rotate(qc, p0, 2.0)
    cx(qc, p0, p1)
    qc.delay(5000, p0, unit="dt")
    rotate(qc, p4, 1.7)
    qc.measure(p4, side[0])
    with qc.if_test((side[0], 1)):
        qc.x(p5)
    qc.measure(p5, side[0])
    qc.measure(p0, out[0])
    qc.measure(p1, out[1])
    return qc


def counts(circuit: QuantumCircuit, seed: int) -> dict[str, float]:
    """Probabilities of the joint (out, mid) outcomes from SHOTS shots (trajectories)."""
    result = simulator("statevector").run(circuit, shots=SHOTS, seed_simulator=seed).result()
    joint: dict[str, float] = {}
    for key, value in result.get_counts().items():
        out, _side, mid = key.split()
        joint[out + mid] = joint.get(out + mid, 0.0) + value / SHOTS
    return joint


def assert_same_law(a: dict[str, float], b: dict[str, float], shots_a: int, shots_b: int) -> None:
    for key in set(a) | set(b):
        pa, pb = a.get(key, 0.0), b.get(key, 0.0)
        p = (pa * shots_a + pb * shots_b) / (shots_a + shots_b)
        std = np.sqrt(p * (1 - p) * (1 / shots_a + 1 / shots_b))
        assert abs(pa - pb) <= 5 * std + 1e-12, (key, pa, pb, std)


def test_cone_through_mid_circuit_measurement_and_conditional() -> None:
    qc = feed_forward_circuit()
    out_bits = [qc.find_bit(bit).index for bit in qc.cregs[2]]
    mid_bit = qc.find_bit(qc.cregs[0][0]).index
    cone = backward_cone(qc, clbits=out_bits)
    assert cone is not None
    assert cone.qubits == frozenset(PATH[:3])
    kept = [qc.data[i].operation.name for i in cone.instructions]
    assert "if_else" in kept and kept.count("measure") == 3 and "reset" not in kept
    assert any(qc.find_bit(c).index == mid_bit for i in cone.instructions for c in qc.data[i].clbits)
    reduced = restrict(qc, cone)
    full = counts(qc, seed=11)
    cut = counts(reduced, seed=12)
    assert_same_law(full, cut, SHOTS, SHOTS)
    assert sorted(full.values())[-4] > 0.03  # a law spread over several outcomes

    # Negative control: dropping the conditional (in the cone) changes the law beyond the bound.
    conditional = next(i for i in cone.instructions if qc.data[i].operation.name == "if_else")
    damaged = counts(restrict(qc, Cone(tuple(i for i in cone.instructions if i != conditional), cone.qubits)), seed=13)
    with pytest.raises(AssertionError):
        assert_same_law(full, damaged, SHOTS, SHOTS)


def test_engine_sampler_matches_whole_circuit() -> None:
    """The engine (which samples only the cone of the recorded bits) against Aer on the whole
    circuit: joint law of the recorded registers."""
    qc = feed_forward_circuit()
    assert recorded_clbits(qc) == list(range(qc.num_clbits))
    shots = 10_000
    result = AerEngine().sample(BACKEND, [SamplerPub.coerce(qc, shots)], shots=shots, seed=3, noise_model=None)
    data = result[0].data
    mid = data.mid.to_bool_array(order="little")[:, 0]
    out = data.out.to_bool_array(order="little")
    ours: dict[str, float] = {}
    for o0, o1, m in zip(out[:, 0], out[:, 1], mid, strict=True):
        key = f"{int(o1)}{int(o0)}{int(m)}"
        ours[key] = ours.get(key, 0.0) + 1 / shots
    assert_same_law(counts(qc, seed=21), ours, SHOTS, shots)


# ---- Estimator PUBs split into light-cone pieces ----


def exact_z_expectations(
    circuit: QuantumCircuit, supports: list[list[int]], values: np.ndarray, backend: str
) -> np.ndarray:
    """Exact ``<Z...Z>`` on each support as a device reads it: the qubits' probabilities from a
    density matrix with ``backend``'s full noise model, then each qubit's readout error applied.
    One row per binding in ``values`` (``(bindings, parameters)``), all bindings in one Aer call."""
    model = backend_noise_model(backend)
    sim = AerSimulator(method="density_matrix", noise_model=model)
    circuits = []
    for row in values:
        bound = circuit.assign_parameters(row) if circuit.num_parameters else circuit.copy()
        for k, qubits in enumerate(supports):
            bound.save_probabilities(qubits, label=f"p{k}")
        circuits.append(bound)
    result = sim.run(circuits, shots=1).result()
    readout = model._local_readout_errors
    out = np.zeros((len(circuits), len(supports)))
    for k, qubits in enumerate(supports):
        confusion = np.ones((1, 1))
        for q in qubits:  # little-endian: the first qubit is the lowest bit
            confusion = np.kron(np.asarray(readout[(q,)].probabilities).T, confusion)
        signs = np.array([(-1.0) ** bin(i).count("1") for i in range(2 ** len(qubits))])
        for i in range(len(circuits)):
            out[i, k] = signs @ (confusion @ np.asarray(result.data(i)[f"p{k}"]))
    return out


SHERBROOKE = "fake_sherbrooke"
# Twelve couplings in a row of fake_sherbrooke with two-qubit errors < 2 % and readout errors < 4 %.
CHAIN = [108, 112, 126, 125, 124, 123, 122, 121, 120, 119, 118, 110]


def params(pubs: list[tuple[object, ...]], **options: object) -> dict[str, object]:
    return {"pubs": pubs, "options": dict(options), "resilience_level": 0, "version": 2, "support_qiskit": True}


def qaoa_chain(n: int) -> tuple[QuantumCircuit, list[tuple[int, int]]]:
    """One QAOA-like layer on a path of ``n`` qubits (edges in two layers of disjoint edges), laid out on
    ``CHAIN`` and transpiled to fake_sherbrooke's ISA; returns the ISA circuit and the physical edges."""
    from qiskit.circuit import Parameter
    from qiskit.transpiler import generate_preset_pass_manager

    gamma, beta = Parameter("gamma"), Parameter("beta")
    qc = QuantumCircuit(n)
    qc.h(range(n))
    for start in (0, 1):
        for a in range(start, n - 1, 2):
            qc.rzz(gamma * (1.2 + 0.3 * a), a, a + 1)  # a different angle on each edge
    qc.rx(2 * beta, range(n))
    manager = generate_preset_pass_manager(
        optimization_level=1, backend=fake_backend(SHERBROOKE), initial_layout=CHAIN[:n], seed_transpiler=3
    )
    isa = manager.run(qc)
    layout = isa.layout.final_index_layout()
    return isa, [(layout[a], layout[a + 1]) for a in range(n - 1)]


def zz(a: int, b: int, num_qubits: int = 127) -> SparsePauliOp:
    return SparsePauliOp.from_sparse_list([("ZZ", [a, b], 1.0)], num_qubits=num_qubits)


def exact_expectations(circuit: QuantumCircuit, paulis: list[tuple[str, list[int]]], values: np.ndarray) -> np.ndarray:
    """Full-noise expectation values of Z-type ``(label, qubits)`` Paulis as measured: exact
    probabilities of the qubits (density matrix, the backend's noise model), then each qubit's
    readout error. One row per binding in ``values``, all in one Aer call."""
    return exact_z_expectations(circuit, [qubits for _, qubits in paulis], values, SHERBROOKE)


def split_at(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    """Make the estimator split PUBs into pieces of at most ``width`` interacting qubits.

    ``plan_pieces`` takes ``MAX_PIECE_WIDTH`` as a default argument, bound when the module was
    imported, so the constant itself cannot be patched; the planner is wrapped instead."""
    monkeypatch.setattr(estimator_cones, "plan_pieces", partial(estimator_cones.plan_pieces, max_width=width))


def test_estimator_pieces_match_full_noise_density_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    split_at(monkeypatch, 6)
    isa, edges = qaoa_chain(10)
    observables = [zz(a, b) for a, b in edges]
    assert [p.name for p in isa.parameters] == ["beta", "gamma"]
    values = np.array([0.39, 0.5])  # beta, gamma: far from Clifford angles
    engine = AerEngine()
    precision = 0.01
    output = run_estimator(
        params([(isa, observables, values)], default_precision=precision), SHERBROOKE, engine, Defaults()
    )
    result = output.result
    assert isinstance(result, PrimitiveResult)
    pub = result[0]
    assert pub.data.evs.shape == (len(edges),)
    simulator = result.metadata["simulator"]
    assert simulator["light_cones"] > 1 and simulator["widest_group"] <= 6, simulator
    reference = exact_expectations(isa, [("ZZ", [a, b]) for a, b in edges], values[None, :])[0]
    stds = np.asarray(pub.data.stds)
    assert (stds > 0).all() and (stds < 2 * precision).all()
    assert (np.abs(pub.data.evs - reference) <= 5 * stds).all(), (pub.data.evs, reference, stds)
    assert np.ptp(reference) > 0.1  # the terms differ: a mix-up of pieces would show


def test_wide_cones_that_do_not_touch_share_pieces_and_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every ZZ cone of the chain is wider than 3 qubits and not Clifford at these angles: each
    # piece may hold only cones that touch none of its others.
    split_at(monkeypatch, 3)
    isa, edges = qaoa_chain(10)
    observables = [zz(a, b) for a, b in edges]
    values = np.array([0.39, 0.5])
    pub = EstimatorPub.coerce((isa, observables, values))
    terms = [{label: 1.0} for label in observables_labels(observables)]
    pieces = estimator_cones.plan_pieces(pub, terms, max_width=3)
    assert len(terms) > len(pieces) > 1
    for piece in pieces:
        cones = [backward_cone(isa, qubits=support(label)).qubits for label in piece.labels]  # type: ignore[union-attr]
        assert all(a.isdisjoint(b) for i, a in enumerate(cones) for b in cones[i + 1 :]), piece.labels
    precision = 0.01
    output = run_estimator(
        params([(isa, observables, values)], default_precision=precision), SHERBROOKE, AerEngine(), Defaults()
    )
    result = output.result
    assert isinstance(result, PrimitiveResult)
    assert result.metadata["simulator"]["light_cones"] == len(pieces)
    reference = exact_expectations(isa, [("ZZ", [a, b]) for a, b in edges], values[None, :])[0]
    stds = np.asarray(result[0].data.stds)
    assert (np.abs(result[0].data.evs - reference) <= 5 * stds).all(), (result[0].data.evs, reference, stds)
    assert np.ptp(reference) > 0.1


def observables_labels(observables: list[SparsePauliOp]) -> list[str]:
    return [label for op in observables for label in op.paulis.to_labels()]


def support(label: str) -> list[int]:
    pauli = Pauli(label)
    return [int(q) for q in np.flatnonzero(pauli.z | pauli.x)]


def test_estimator_pieces_broadcast_observables_against_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    split_at(monkeypatch, 6)
    isa, edges = qaoa_chain(10)
    a, b, c = edges[0], edges[4], edges[8]
    # Observables (3,): a sum over distant edges with an identity offset, one edge, and a weighted pair.
    identity = SparsePauliOp("I" * 127)
    observables = [
        zz(*a) + zz(*c) + 0.5 * identity,
        zz(*b),
        0.7 * zz(*a) - 0.4 * zz(*b),
    ]
    values = np.array([[[0.39, 0.5]], [[1.2, 0.6]]])  # bindings (2, 1) of (beta, gamma)
    precision = 0.012
    engine = AerEngine()
    output = run_estimator(
        params([(isa, observables, values)], default_precision=precision), SHERBROOKE, engine, Defaults()
    )
    result = output.result
    assert isinstance(result, PrimitiveResult)
    pub = result[0]
    assert pub.data.evs.shape == pub.data.stds.shape == (2, 3)
    assert result.metadata["simulator"]["light_cones"] > 1
    exact = exact_expectations(isa, [("ZZ", list(e)) for e in (a, b, c)], values.reshape(2, 2))
    za, zb, zc = exact[:, 0], exact[:, 1], exact[:, 2]
    reference = np.stack([za + zc + 0.5, zb, 0.7 * za - 0.4 * zb], axis=1)
    stds = np.asarray(pub.data.stds)
    assert (stds > 0).all()
    assert (np.abs(pub.data.evs - reference) <= 5 * stds).all(), (pub.data.evs, reference, stds)
    assert np.abs(reference[0] - reference[1]).max() > 0.05  # the two bindings differ


# ---- Kicked Ising on 127 qubits, one step ----


def kicked_ising_pub(steps: int) -> tuple[QuantumCircuit, SparsePauliOp]:
    from qiskit.circuit import Parameter

    backend = fake_backend(SHERBROOKE)
    circuit = tutorials.kicked_ising(127, tutorials.coupling_edges(backend), steps, Parameter("theta"))
    isa, observable = tutorials.transpile(backend, circuit, tutorials.kicked_ising_observable(127))
    return isa, observable


THETAS = np.array([0.2, 0.9, 1.5, 2.4])


@pytest.mark.parametrize("ideal", [False, True])
def test_kicked_ising_one_step_follows_cos_theta(ideal: bool) -> None:
    isa, observable = kicked_ising_pub(1)
    precision = 0.02
    options: dict[str, object] = {"default_precision": precision}
    if ideal:
        options["simulator"] = {"noise_model": NoiseModel(), "seed_simulator": 5}
    else:
        options["simulator"] = {"seed_simulator": 6}
    output = run_estimator(params([(isa, observable, THETAS[:, None])], **options), SHERBROOKE, AerEngine(), Defaults())
    result = output.result
    assert isinstance(result, PrimitiveResult)
    evs, stds = np.asarray(result[0].data.evs), np.asarray(result[0].data.stds)
    assert evs.shape == (4,)
    # After one step Z62 commutes with every RZZ: the ideal value is cos(theta).
    ideal_values = np.cos(THETAS)
    if ideal:
        assert (np.abs(evs - ideal_values) <= 4 * stds).all(), (evs, ideal_values, stds)
    else:
        assert (np.abs(evs) <= np.abs(ideal_values) + 4 * stds).all(), (evs, ideal_values, stds)
        strong = ideal_values > 0.3
        assert (np.sign(evs[strong]) == np.sign(ideal_values[strong])).all()
        # One step of noise damps the signal by a factor in (0.5, 1].
        assert (evs[strong] >= 0.5 * ideal_values[strong] - 4 * stds[strong]).all(), (evs, ideal_values)


# ---- QAOA on the tutorial's 100-node graph, ideal ----


def test_qaoa_100_nodes_edges_match_their_cone_statevectors() -> None:
    from qiskit.quantum_info import Statevector

    backend = fake_backend(SHERBROOKE)
    graph = tutorials.qaoa_graph(backend)
    cost = tutorials.maxcut_hamiltonian(100, graph)
    isa, mapped = tutorials.transpile(backend, tutorials.qaoa_circuit(cost), cost)
    terms = [Pauli(label) for label in mapped.paulis.to_labels()]
    # Ten edges spread over the graph whose cones stay small enough for a statevector reference.
    chosen: list[tuple[Pauli, Cone]] = []
    for pauli in terms[:: max(1, len(terms) // 30)]:
        support = [int(q) for q in np.flatnonzero(pauli.z)]
        cone = backward_cone(isa, qubits=support)
        assert cone is not None
        if len(cone.qubits) <= 14:
            chosen.append((pauli, cone))
    chosen = chosen[:10]
    assert len(chosen) == 10
    values = np.array(tutorials.QAOA_INITIAL) * np.array([0.23, 0.41])  # away from Clifford angles
    precision = 0.03
    observables = [SparsePauliOp(pauli) for pauli, _ in chosen]
    options = {"default_precision": precision, "simulator": {"noise_model": NoiseModel(), "seed_simulator": 9}}
    output = run_estimator(params([(isa, observables, values)], **options), SHERBROOKE, AerEngine(), Defaults())
    result = output.result
    assert isinstance(result, PrimitiveResult)
    evs, stds = np.asarray(result[0].data.evs), np.asarray(result[0].data.stds)
    bound = isa.assign_parameters(values)
    references = []
    for pauli, cone in chosen:
        qubits = sorted(cone.qubits)
        position = {q: i for i, q in enumerate(qubits)}
        small = QuantumCircuit(len(qubits))
        for index in cone.instructions:
            instruction = bound.data[index]
            small.append(instruction.operation, [position[bound.find_bit(q).index] for q in instruction.qubits])
        small.global_phase = 0
        support = [position[int(q)] for q in np.flatnonzero(pauli.z)]
        references.append(Statevector(small).expectation_value(Pauli("ZZ"), support).real)
    reference = np.array(references)
    assert (np.abs(evs - reference) <= 4 * stds).all(), (evs, reference, stds)
    assert np.ptp(reference) > 0.05 or np.abs(reference).max() > 0.05  # not all trivially zero
