"""PEC through the client's executor Estimator (program ``executor``), over real HTTP.

The client's own ``test_pec_estimator`` (its integration suite, ``test_executor_estimator.py``)
as written, on a device where its mirror circuit has entangling layers and on one where it has
none (``fake_sherbrooke``: ECR is coupled one way only, so no layer is boxed with noise and the
samplex has no ``pauli_signs``, which the server then sends empty); then PEC fed by
``NoiseLearnerV3`` lying closer to the ideal values than the unmitigated estimate.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import PauliLindbladMap, SparsePauliOp, Statevector
from qiskit.transpiler import generate_preset_pass_manager

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")


def make_mirror_circuit_with_phases(backend, num_qubits: int = 2, layers: int = 4, seed: int = 7) -> QuantumCircuit:  # type: ignore[no-untyped-def]
    """The client's test helper (``test/utils.py``): a mirror circuit of nearest-neighbour
    entanglers and random RX layers, then one parametrized RX per qubit, measured."""
    basis_gates = backend.configuration().basis_gates
    entangler = next(gate for gate in ("cz", "cx", "ecr") if gate in basis_gates)

    def layer(start: int) -> QuantumCircuit:
        qc = QuantumCircuit(num_qubits)
        for control, target in zip(
            range(start, backend.num_qubits, 2), range(start + 1, backend.num_qubits, 2), strict=False
        ):
            if (
                backend.target.instruction_supported(entangler, (control, target))
                and control < num_qubits
                and target < num_qubits
            ):
                getattr(qc, entangler)(control, target)
        return qc

    layer1, layer2 = layer(0), layer(1)
    rng = np.random.default_rng(seed)
    mirror = QuantumCircuit(num_qubits)
    for _ in range(layers):
        mirror.compose(layer1, inplace=True)
        mirror.rx(rng.uniform(0, 2 * np.pi), range(num_qubits))
        mirror.compose(layer2, inplace=True)
        mirror.rx(rng.uniform(0, 2 * np.pi), range(num_qubits))
    circuit = QuantumCircuit(num_qubits)
    circuit.compose(mirror, inplace=True)
    circuit.barrier()
    circuit.compose(mirror.inverse(), inplace=True)
    circuit.barrier()
    for qubit in range(num_qubits):
        circuit.rx(Parameter(f"theta_{qubit}"), qubit)
    circuit.measure_all()
    return circuit


@pytest.mark.parametrize("name", ["fake_kolkata", "fake_sherbrooke"])
def test_pec_estimator(service, name: str) -> None:
    """The client's test: PEC with a given layer noise model, results of the PUB shapes."""
    from qiskit_ibm_runtime.executor_estimator import EstimatorV2
    from samplomatic import InjectNoise
    from samplomatic.utils import get_annotation

    backend = service.backend(name)
    isa_circuit = generate_preset_pass_manager(optimization_level=1, target=backend.target).run(
        make_mirror_circuit_with_phases(backend)
    )
    zz_with_offset = SparsePauliOp.from_list([("ZZ", 1.0), ("II", 9.0)]).apply_layout(isa_circuit.layout)
    xx_with_offset = SparsePauliOp.from_list([("XX", 1.0), ("II", 3.0)]).apply_layout(isa_circuit.layout)
    values = [[0, np.pi / 4], [np.pi, 5 * np.pi / 4]]
    pubs = [
        (isa_circuit, [[zz_with_offset], [xx_with_offset]], values),
        (isa_circuit, [zz_with_offset, xx_with_offset], values),
    ]

    estimator = EstimatorV2(backend)
    estimator.options.resilience.pec_mitigation = True
    layers = estimator.find_unique_layers(pubs, types="gates")
    assert bool(layers) == (name == "fake_kolkata")
    # The client's test assigns a dict by annotation ref; 0.51's option takes (layer, map) pairs.
    estimator.options.resilience.layer_noise_model = [
        (layer, PauliLindbladMap.from_list([("X" * layer.operation.num_qubits, 0.001)]))
        for layer in layers
        if get_annotation(layer.operation, InjectNoise)
    ]

    results = estimator.run(pubs).result()

    assert len(results) == 2
    assert results[0].data.evs.shape == (2, 2)
    assert results[1].data.evs.shape == (2,)
    # The offsets (9 for ZZ, 3 for XX) around a Pauli's expectation value; the given maps are
    # not the device's noise, so only the range is checked here (accuracy: the next test).
    evs = [results[0].data.evs[0], results[0].data.evs[1], results[1].data.evs[:1], results[1].data.evs[1:]]
    for values_of_one_observable, offset in zip(evs, (9, 3, 9, 3), strict=True):
        assert np.all(np.abs(values_of_one_observable - offset) <= 1.5), results


def _ghz_and_back(num_qubits: int) -> QuantumCircuit:
    qc = QuantumCircuit(num_qubits)
    qc.h(0)
    for q in range(num_qubits - 1):
        qc.cx(q, q + 1)
    qc.barrier()
    for q in reversed(range(num_qubits - 1)):
        qc.cx(q, q + 1)
    qc.barrier()
    # Back to |0000>, then a GHZ state once more: Z-parity and X-string observables are all +1.
    qc.h(0)
    qc.h(0)
    for q in range(num_qubits - 1):
        qc.cx(q, q + 1)
    return qc


def test_pec_lies_closer_to_ideal_than_unmitigated(service) -> None:
    """Mean |ev - ideal| over four observables and two seeds: PEC (with NoiseLearnerV3's maps)
    removes most of the unmitigated bias of fake_kolkata's noise."""
    from qiskit_ibm_runtime import NoiseLearnerV3
    from qiskit_ibm_runtime.executor_estimator import EstimatorV2

    backend = service.backend("fake_kolkata")
    circuit = _ghz_and_back(4)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=0).run(circuit)
    labels = ["ZZII", "IZZI", "IIZZ", "XXXX"]
    ideal = np.array([Statevector(circuit).expectation_value(SparsePauliOp(label)).real for label in labels])
    assert np.allclose(ideal, 1)
    observables = [SparsePauliOp(label).apply_layout(isa.layout) for label in labels]
    pub = (isa, observables)

    errors: dict[str, list[float]] = {"unmitigated": [], "pec": []}
    learned = None
    for seed in (21, 22):
        plain = EstimatorV2(backend)
        plain.options.resilience_level = 0
        plain.options.default_shots = 20_000
        plain.options.simulator.seed_simulator = seed
        evs = plain.run([pub]).result()[0].data.evs
        errors["unmitigated"] += list(np.abs(evs - ideal))

        pec = EstimatorV2(backend)
        pec.options.resilience.pec_mitigation = True
        pec.options.default_shots = 20_000
        pec.options.simulator.seed_simulator = seed
        layers = pec.find_unique_layers([pub])
        assert layers
        if learned is None:
            learned = NoiseLearnerV3(backend).run(layers).result().to_pauli_lindblad_maps()
        pec.options.resilience.layer_noise_model = zip(layers, learned, strict=True)
        evs = pec.run([pub]).result()[0].data.evs
        errors["pec"] += list(np.abs(evs - ideal))

    bias, residual = float(np.mean(errors["unmitigated"])), float(np.mean(errors["pec"]))
    print(f"mean |ev - ideal|: unmitigated {bias:.3f}, PEC {residual:.3f}")
    assert bias > 0.05, f"the noise should bias the plain estimates: {errors}"
    assert residual < bias / 2, f"PEC {residual:.3f} vs unmitigated {bias:.3f}: {errors}"
