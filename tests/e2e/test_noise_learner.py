"""Program ``noise-learner`` with the real client: ``NoiseLearner``, ``NoiseLearnerV3``, and PEC fed by it.

The learned layer models are checked against an independent computation of the Pauli-twirled
noise of the backend's noise model: each gate error's Kraus operators give the Pauli error
probabilities of its twirl (``p_Q = sum_i |Tr(Q K_i)|^2 / 4^k``, the chi-matrix diagonal),
whose Walsh-Hadamard transform gives the Pauli fidelities; a layer's fidelity is the product
over its two-qubit gates and its qubits' dressing gates (two ``sx`` each, pulled back through
the gates). The server's models must reproduce those fidelities for every weight-1 Pauli and
every weight-2 Pauli on the layer's coupled pairs.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import Kraus, Pauli, QubitSparsePauli, SparsePauliOp, Statevector
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_aer.noise import NoiseModel

pytestmark = pytest.mark.e2e

# Relative tolerance on Pauli fidelities: the model is exact for the fake backends' noise.
FIDELITY_RTOL = 1e-9


@functools.cache
def noise_model(name: str) -> NoiseModel:
    from qiskit_ibm_runtime.fake_provider import FakeKolkataV2, FakeSherbrooke

    # The server's worker builds the same model: NoiseModel.from_backend of the client's fake backend.
    backends = {"fake_kolkata": FakeKolkataV2, "fake_sherbrooke": FakeSherbrooke}
    return NoiseModel.from_backend(backends[name]())


@functools.cache
def twirled_gate_fidelities(backend: str, gate: str, qargs: tuple[int, ...]) -> dict[str, float]:
    """Pauli fidelities of the twirl of ``gate``'s error on physical ``qargs``; labels are
    big-endian over ``qargs`` (the last letter acts on ``qargs[0]``)."""
    error = noise_model(backend)._local_quantum_errors[gate][qargs]
    kraus = Kraus(error).data
    k = len(qargs)
    labels = ["".join(p) for p in itertools.product("IXYZ", repeat=k)]
    probabilities = {
        q: sum(abs(np.trace(Pauli(q).to_matrix().conj().T @ op)) ** 2 for op in kraus) / 4**k for q in labels
    }
    return {
        p: sum(prob * (1 if Pauli(p).commutes(Pauli(q)) else -1) for q, prob in probabilities.items()) for p in labels
    }


def layer_fidelity(
    backend: str, gates: list[tuple[str, tuple[int, ...]]], box_qubits: list[int], pauli: dict[int, str]
) -> float:
    """Fidelity of a Pauli (physical qubit -> letter) under a left-dressed layer's twirled noise.

    The gate errors act after the gates; every box qubit's dressing (rz-sx-rz-sx-rz: two ``sx``
    errors) acts before them, so it sees the Pauli pulled back through the gate, ``U^dagger P U``.
    """
    from qiskit.circuit.library import get_standard_gate_name_mapping
    from qiskit.quantum_info import Clifford

    fidelity = 1.0
    seen_by_dressing = dict(pauli)
    for name, qargs in gates:
        label = "".join(pauli.get(q, "I") for q in reversed(qargs))
        if set(label) != {"I"}:
            fidelity *= twirled_gate_fidelities(backend, name, qargs)[label]
        back = Pauli(label).evolve(Clifford(get_standard_gate_name_mapping()[name]), frame="h")
        for j, q in enumerate(qargs):
            seen_by_dressing[q] = "IXZY"[int(back.x[j]) + 2 * int(back.z[j])]
    for q in box_qubits:
        letter = seen_by_dressing.get(q, "I")
        if letter != "I":
            fidelity *= twirled_gate_fidelities(backend, "sx", (q,))[letter] ** 2
    return fidelity


def paulis_to_check(qubits: list[int], coupling: set[tuple[int, int]]) -> list[dict[int, str]]:
    """Every weight-1 Pauli on ``qubits`` and every weight-2 Pauli on their coupled pairs."""
    single = [{q: p} for q in qubits for p in "XYZ"]
    pairs = sorted({(min(a, b), max(a, b)) for a, b in coupling if a in qubits and b in qubits})
    return single + [{a: pa, b: pb} for a, b in pairs for pa in "XYZ" for pb in "XYZ"]


def ghz_and_back(num_qubits: int) -> QuantumCircuit:
    """GHZ preparation and its inverse: ideal state |0...0>, 2*(n-1) CX layers of noise."""
    qc = QuantumCircuit(num_qubits)
    qc.h(0)
    for q in range(num_qubits - 1):
        qc.cx(q, q + 1)
    qc.barrier()
    for q in reversed(range(num_qubits - 1)):
        qc.cx(q, q + 1)
    qc.h(0)
    return qc


@pytest.fixture
def kolkata(service):  # type: ignore[no-untyped-def]
    return service.backend("fake_kolkata")


@pytest.fixture(params=["fake_kolkata", "fake_sherbrooke"])
def device(service, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A 27-qubit CX device and a 127-qubit ECR device."""
    return service.backend(request.param)


def test_noise_learner_layers_match_twirled_backend_noise(device) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime.noise_learner import NoiseLearner
    from qiskit_ibm_runtime.options import NoiseLearnerOptions
    from qiskit_ibm_runtime.results import LayerError, NoiseLearnerResult, PauliLindbladError

    qc = ghz_and_back(4)
    qc.measure_all()
    isa = generate_preset_pass_manager(backend=device, optimization_level=0).run(qc)
    two_qubit_gates = {
        (i.operation.name, tuple(isa.find_bit(q).index for q in i.qubits))
        for i in isa.data
        if i.operation.num_qubits == 2 and i.operation.name != "barrier"
    }
    options = NoiseLearnerOptions(
        max_layers_to_learn=10, num_randomizations=8, layer_pair_depths=[0, 1, 2], twirling_strategy="active"
    )
    with pytest.warns(DeprecationWarning):
        learner = NoiseLearner(device, options)
    job = learner.run([isa])
    result = job.result()

    assert isinstance(result, NoiseLearnerResult)
    assert result.metadata["backend"] == device.name
    assert result.metadata["input_options"] == {
        "max_layers_to_learn": 10,
        "shots_per_randomization": 128,
        "num_randomizations": 8,
        "layer_pair_depths": [0, 1, 2],
        "twirling_strategy": "active",
    }
    coupling = {tuple(edge) for edge in device.coupling_map.get_edges()}
    learned_gates = set()
    for layer in result.data:
        assert isinstance(layer, LayerError) and isinstance(layer.error, PauliLindbladError)
        assert layer.qubits == sorted(layer.qubits) and layer.circuit.num_qubits == len(layer.qubits)
        gates = [
            (i.operation.name, tuple(layer.qubits[layer.circuit.find_bit(q).index] for q in i.qubits))
            for i in layer.circuit.data
        ]
        learned_gates.update(gates)
        # "active": a layer twirls only the qubits its gates act on.
        assert set(layer.qubits) == {q for _, qargs in gates for q in qargs}
        assert np.all(layer.error.rates >= 0)
        generators = layer.error.generators
        for pauli in paulis_to_check(layer.qubits, coupling):
            label = "".join(pauli.get(q, "I") for q in reversed(layer.qubits))
            anticommuting = ~generators.commutes(Pauli(label))
            model = np.exp(-2 * layer.error.rates[anticommuting].sum())
            truth = layer_fidelity(device.name, gates, layer.qubits, pauli)
            assert model == pytest.approx(truth, rel=FIDELITY_RTOL), (layer.qubits, label)
    # Every two-qubit gate of the circuit sits in one of the learned layers.
    assert learned_gates == two_qubit_gates


def test_noise_learner_honours_max_layers_and_strategy(kolkata) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime.noise_learner import NoiseLearner

    isa = generate_preset_pass_manager(backend=kolkata, optimization_level=0).run(ghz_and_back(4))
    with pytest.warns(DeprecationWarning):
        learner = NoiseLearner(kolkata, {"max_layers_to_learn": 2, "twirling_strategy": "all"})
    result = learner.run([isa]).result()
    assert len(result.data) == 2
    # "all": every layer twirls every qubit of the circuit (the whole device for an ISA circuit).
    assert all(layer.qubits == list(range(kolkata.num_qubits)) for layer in result.data)
    assert result.metadata["input_options"]["twirling_strategy"] == "all"


def test_noise_learner_takes_the_ibm_name_of_a_device(service) -> None:  # type: ignore[no-untyped-def]
    """The client's own integration tests run the noise learner on ``ibm_*`` names."""
    from qiskit_ibm_runtime.noise_learner import NoiseLearner

    backend = service.backend("ibm_sherbrooke")
    isa = generate_preset_pass_manager(backend=backend, optimization_level=0).run(ghz_and_back(4))
    with pytest.warns(DeprecationWarning):
        learner = NoiseLearner(backend, {"max_layers_to_learn": 1})
    result = learner.run([isa]).result()
    assert len(result.data) == 1 and result.data[0].error.num_qubits > 0


def _unique_layers(backend, circuit: QuantumCircuit, observable: SparsePauliOp):  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime.executor_estimator import Estimator

    estimator = Estimator(mode=backend)
    estimator.options.resilience.pec_mitigation = True
    return estimator.find_unique_layers([(circuit, observable)])


def test_noise_learner_v3_matches_twirled_backend_noise(device) -> None:  # type: ignore[no-untyped-def]
    from qiskit.circuit import QuantumRegister
    from qiskit_ibm_runtime import NoiseLearnerV3
    from qiskit_ibm_runtime.results import NoiseLearnerV3Results
    from samplomatic.utils import undress_box

    isa = generate_preset_pass_manager(backend=device, optimization_level=0).run(ghz_and_back(4))
    observable = SparsePauliOp("ZZZZ").apply_layout(isa.layout)
    layers = _unique_layers(device, isa, observable)
    assert layers

    learner = NoiseLearnerV3(device)
    learner.options.layer_pair_depths = [0, 1, 4]
    result = learner.run(layers).result()

    assert isinstance(result, NoiseLearnerV3Results) and len(result) == len(layers)
    physical = {bit: i for i, bit in enumerate(QuantumRegister(device.num_qubits, "q"))}
    coupling = {tuple(edge) for edge in device.coupling_map.get_edges()}
    for layer, datum, noise_map in zip(layers, result.data, result.to_pauli_lindblad_maps(), strict=True):
        assert datum.metadata["learning_protocol"] == "lindblad"
        assert set(datum.metadata["post_selection"]["fraction_kept"]) == {0, 1, 4}
        qubits = sorted(physical[q] for q in layer.qubits)
        assert noise_map.num_qubits == len(qubits)
        inner = dict(zip(layer.operation.body.qubits, (physical[q] for q in layer.qubits), strict=True))
        gates = [
            (i.operation.name, tuple(inner[q] for q in i.qubits))
            for i in undress_box(layer.operation).body.data
            if i.operation.num_qubits == 2
        ]
        local = {q: j for j, q in enumerate(qubits)}
        for pauli in paulis_to_check(qubits, coupling):
            sparse = QubitSparsePauli(("".join(pauli.values()), [local[q] for q in pauli]), num_qubits=len(qubits))
            truth = layer_fidelity(device.name, gates, qubits, pauli)
            assert noise_map.pauli_fidelity(sparse) == pytest.approx(truth, rel=FIDELITY_RTOL), (qubits, pauli)


@pytest.mark.parametrize("mitigation", ["pec", "pea"])
def test_learned_noise_removes_most_of_the_bias(kolkata, mitigation: str) -> None:  # type: ignore[no-untyped-def]
    """PEC, and ZNE with PEA amplification, in the executor Estimator with the learned layer maps."""
    from qiskit_ibm_runtime import NoiseLearnerV3
    from qiskit_ibm_runtime.executor_estimator import Estimator

    circuit = ghz_and_back(4)
    isa = generate_preset_pass_manager(backend=kolkata, optimization_level=0).run(circuit)
    observable = SparsePauliOp.from_list([(label, 0.25) for label in ("ZZII", "IZZI", "IIZZ", "ZIIZ")])
    ideal = Statevector(circuit).expectation_value(observable).real
    isa_observable = observable.apply_layout(isa.layout)

    plain = Estimator(mode=kolkata)
    plain.options.resilience_level = 0
    plain.options.default_shots = 20_000
    plain.options.simulator.seed_simulator = 11
    unmitigated = float(plain.run([(isa, isa_observable)]).result()[0].data.evs)

    mitigated_estimator = Estimator(mode=kolkata)
    if mitigation == "pec":
        mitigated_estimator.options.resilience.pec_mitigation = True
    else:
        mitigated_estimator.options.resilience.zne_mitigation = True
        mitigated_estimator.options.resilience.zne.amplifier = "pea"
    mitigated_estimator.options.default_shots = 20_000
    if mitigation == "pea":
        # PEA's injected noise differs between randomizations and the extrapolation amplifies
        # that spread: more randomizations keep its std near 0.02.
        mitigated_estimator.options.twirling.num_randomizations = 256
        mitigated_estimator.options.twirling.shots_per_randomization = 128
    mitigated_estimator.options.simulator.seed_simulator = 12
    layers = mitigated_estimator.find_unique_layers([(isa, isa_observable)])
    learned = NoiseLearnerV3(kolkata).run(layers).result()
    mitigated_estimator.options.resilience.layer_noise_model = zip(
        layers, learned.to_pauli_lindblad_maps(), strict=True
    )
    mitigated_result = mitigated_estimator.run([(isa, isa_observable)]).result()[0]
    mitigated = float(mitigated_result.data.evs)

    bias, residual = abs(unmitigated - ideal), abs(mitigated - ideal)
    print(f"{mitigation}: ideal {ideal}, unmitigated {unmitigated}, mitigated {mitigated}", mitigated_result.data.stds)
    assert bias > 0.03, f"the noise should bias the plain estimate (got {unmitigated} for ideal {ideal})"
    assert residual < bias / 3, f"ideal {ideal}, unmitigated {unmitigated}, {mitigation} {mitigated}"
