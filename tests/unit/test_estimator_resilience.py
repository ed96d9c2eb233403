"""Resilience planning for program ``estimator`` and the exact layer noise models for PEC/PEA."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import BoxOp, CircuitInstruction
from qiskit.quantum_info import PauliLindbladMap, QubitSparsePauli, SparsePauliOp
from qiskit_aer.noise import NoiseModel, depolarizing_error, pauli_error

from qiskit_runtime_server.worker.engines.aer import engine_for
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs.estimator_resilience import plan_resilience
from qiskit_runtime_server.worker.programs.layer_noise import _paulis, layer_map, lindblad_rates, pauli_fidelities
from qiskit_runtime_server.worker.programs.primitives import run_estimator


def test_pec_with_zne_is_refused_by_the_worker() -> None:
    qc = QuantumCircuit(2)
    qc.sx(0)  # an ISA circuit of fake_manila, so the options are what gets refused
    qc.cx(0, 1)
    params = {
        "pubs": [[qc, SparsePauliOp("ZZ"), None, 0.1]],
        "options": {"resilience": {"pec_mitigation": True, "zne_mitigation": True}},
    }
    with pytest.raises(ProgramError, match="incompatible"):
        run_estimator(params, "fake_manila", engine_for("CPU"), Defaults())


@pytest.mark.parametrize("level", [3, -1, True, "1"])
def test_resilience_level_out_of_range(level: object) -> None:
    with pytest.raises(ProgramError, match="resilience_level"):
        plan_resilience({}, level)


def test_bad_extrapolator_is_a_program_error() -> None:
    with pytest.raises(ProgramError, match="extrapolator"):
        plan_resilience({"resilience": {"zne_mitigation": True, "zne": {"extrapolator": "cubic"}}}, 2)


def test_unset_level_is_ibm_default_and_leftovers_pass_through() -> None:
    plan, rest = plan_resilience({"dynamical_decoupling": {"enable": True}, "twirling": {"strategy": "all"}}, None)
    assert plan.options.resilience_level == 1
    assert plan.options.resilience.measure_mitigation is True
    assert plan.options.twirling.strategy == "all"
    assert plan.active
    assert rest == {"dynamical_decoupling": {"enable": True}}


def test_lindblad_rates_reproduce_the_twirled_channel() -> None:
    error = pauli_error([("IX", 0.02), ("ZZ", 0.01), ("II", 0.97)])
    rates = lindblad_rates(error)
    model = PauliLindbladMap.from_sparse_list(
        [(p.to_label().replace("I", ""), [j for j in range(2) if p[j].to_label() != "I"], r) for p, r in rates],
        num_qubits=2,
    )
    # The model's Pauli fidelities equal the channel's (to fitting precision).
    expected = pauli_fidelities(error)
    got = [model.pauli_fidelity(QubitSparsePauli.from_label(p.to_label())) for p in _paulis(2)]
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_layer_map_indexes_the_box_qubits() -> None:
    circuit = QuantumCircuit(3)
    body = QuantumCircuit(3)
    body.cx(1, 2)
    circuit.append(BoxOp(body), [0, 1, 2])
    layer = CircuitInstruction(circuit.data[0].operation, circuit.qubits)
    noise = NoiseModel()
    noise.add_quantum_error(depolarizing_error(0.05, 2), "cx", [1, 2])
    model = layer_map(layer, circuit, noise)
    assert model.num_qubits == 3
    supports = {tuple(sorted(indices)) for _, indices, _ in model.to_sparse_list()}
    assert supports <= {(1,), (2,), (1, 2)}
    assert len(supports) == 3


def test_gate_folding_front_and_back_fold_different_gates(monkeypatch: pytest.MonkeyPatch) -> None:
    from qiskit.transpiler import generate_preset_pass_manager

    from qiskit_runtime_server.worker.engines.aer import AerEngine, fake_backend

    backend = fake_backend("fake_kolkata")
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    for pair in ((1, 2), (0, 1), (0, 1), (1, 2)) * 2:
        qc.barrier()
        qc.cx(*pair)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1, seed_transpiler=1).run(qc)
    observable = SparsePauliOp("XXX").apply_layout(isa.layout)
    sampled: list[QuantumCircuit] = []
    original = AerEngine.sample_bits

    def recording(self: AerEngine, backend_name: str, circuit: QuantumCircuit, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        sampled.append(circuit)
        return original(self, backend_name, circuit, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AerEngine, "sample_bits", recording)

    def folded(amplifier: str) -> tuple[list[list[tuple[str, tuple[int, ...]]]], np.ndarray]:
        """The two-qubit gate sequence of each circuit sampled, and the evs per noise factor."""
        sampled.clear()
        options = {
            "simulator": {"seed_simulator": 3},
            "resilience": {"zne_mitigation": True, "zne": {"noise_factors": [1, 2, 3], "amplifier": amplifier}},
        }
        params = {"pubs": [[isa, observable, None, 0.05]], "options": options, "resilience_level": 1}
        evs = run_estimator(params, "fake_kolkata", engine_for("CPU"), Defaults()).result[0].data.evs_noise_factors
        sequences = [
            [(i.name, tuple(c.find_bit(q).index for q in i.qubits)) for i in c.data if len(i.qubits) == 2]
            for c in sampled
        ]
        return sequences, np.asarray(evs)

    front, front_evs = folded("gate_folding_front")
    back, back_evs = folded("gate_folding_back")
    # One circuit per noise factor (the TREX calibration circuit has no two-qubit gate).
    lengths = sorted({len(sequence) for sequence in front} - {0})
    assert len(lengths) == 3
    by_length = {len(s): s for s in front}, {len(s): s for s in back}
    # Factors 1 and 3 fold no two-qubit gate or all of them; 2 folds half, at one end or the other.
    assert by_length[0][lengths[0]] == by_length[1][lengths[0]]
    assert by_length[0][lengths[2]] == by_length[1][lengths[2]]
    assert by_length[0][lengths[1]] != by_length[1][lengths[1]]
    assert front_evs[0] == back_evs[0] and front_evs[2] == back_evs[2]
    assert front_evs[0] > front_evs[1] > front_evs[2]  # more noise, smaller <XXX>
