"""Program ``noise-learner`` without a server: the fit, the frames, IBM's result schemas, bad input.

The worker's functions are called with params encoded by the client's own encoders, and the API
runs in process on fakeredis for the outline checks of ``POST /jobs``.
"""

from __future__ import annotations

import itertools
import json

import httpx
import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import BoxOp, CircuitInstruction, QuantumRegister
from qiskit.quantum_info import Operator, Pauli, PauliLindbladMap, SuperOp
from qiskit_aer.noise import NoiseModel, ReadoutError, pauli_error

from qiskit_runtime_server.worker.engines.aer import engine_for
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs.noise_learner import Dressing, layer_noise, run_noise_learner


def _flips(terms: list[tuple[str, float]]):  # type: ignore[no-untyped-def]
    """A product of single-Pauli flip channels: a Pauli-Lindblad channel with positive rates."""
    error = None
    for label, p in terms:
        flip = pauli_error([("I" * len(label), 1 - p), (label, p)])
        error = flip if error is None else error.compose(flip)
    return error


def _pauli_channel_model() -> NoiseModel:
    model = NoiseModel()
    two = _flips([("IX", 0.01), ("YI", 0.02), ("ZZ", 0.015), ("XY", 0.005)])
    model.add_quantum_error(two, "cliff", [0, 1])
    model.add_quantum_error(_flips([("X", 0.004), ("Z", 0.006)]), "sx", [0])
    model.add_quantum_error(_flips([("Y", 0.005)]), "sx", [1])
    return model


def _clifford_gate():  # type: ignore[no-untyped-def]
    """A two-qubit Clifford whose square is not a Pauli: U P U^dagger and U^dagger P U differ."""
    qc = QuantumCircuit(2, name="cliff")
    qc.h(0)
    qc.s(0)
    qc.cx(0, 1)
    qc.sdg(1)
    return qc.to_gate()


def _superop_fidelity(channel: SuperOp, label: str) -> float:
    matrix = Pauli(label).to_matrix()
    vector = matrix.reshape(-1, order="F")
    return float((vector.conj() @ channel.data @ vector).real / matrix.shape[0])


@pytest.mark.parametrize("site", ["after", "before"])
def test_layer_model_is_the_twirled_channel_through_a_non_self_inverse_gate(site: str) -> None:
    # The frame the dressing noise is pulled through (U^dagger P U, not U P U^dagger) matters
    # for this gate (it would not for CX, ECR, CZ or iSWAP, whose squares are Paulis). All errors are Pauli channels, so
    # the brute-force superoperator of the whole box is itself the twirled channel.
    model = _pauli_channel_model()
    gate = _clifford_gate()
    noise = layer_noise([0, 1], [(gate, (0, 1))], model, coupling=[], site=site, dressing=Dressing())
    u = SuperOp(Operator(gate))
    sx0 = SuperOp(model._local_quantum_errors["sx"][(0,)])
    sx1 = SuperOp(model._local_quantum_errors["sx"][(1,)])
    dressing = (sx1 & sx1).tensor(sx0 & sx0)  # qubit 1 is the left factor
    error = SuperOp(model._local_quantum_errors["cliff"][(0, 1)])
    box = dressing.compose(u).compose(error)  # dressing, then the gate, then its error
    u_dagger = SuperOp(Operator(gate).adjoint())
    # Written after the gate, box = U then N_after, so N_after = U^dagger then box; written
    # before it, box = N_before then U, so N_before = box then U^dagger.
    written = u_dagger.compose(box) if site == "after" else box.compose(u_dagger)
    plm = PauliLindbladMap.from_sparse_list(
        [("".join(p for _, p in g), [q for q, _ in g], r) for g, r in zip(noise.generators, noise.rates, strict=True)],
        num_qubits=2,
    )
    for label in ("".join(p) for p in itertools.product("IXYZ", repeat=2)):
        from qiskit.quantum_info import QubitSparsePauli

        assert plm.pauli_fidelity(QubitSparsePauli(label)) == pytest.approx(
            _superop_fidelity(written, label), abs=1e-12
        ), label
    assert np.all(noise.rates >= 0)


def _encoded(value: object) -> dict:
    from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder

    return json.loads(json.dumps(value, cls=RuntimeEncoder), cls=RuntimeDecoder)


def _bell_isa() -> QuantumCircuit:
    qc = QuantumCircuit(5)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.measure_all()
    return qc  # fake_manila: cx on (0,1) and (1,2) is native


def test_noise_learner_result_follows_ibm_schema_and_decodes_to_client_objects() -> None:
    from ibm_quantum_schemas.noise_learner_v2.version_0_1 import ResultsModel
    from qiskit_ibm_runtime.decoders.noise_learner import NoiseLearnerResultDecoder
    from qiskit_ibm_runtime.results import LayerError, NoiseLearnerResult

    params = _encoded({"circuits": [_bell_isa()], "options": {"twirling_strategy": "active", "support_qiskit": True}})
    output = run_noise_learner(params, "fake_manila", engine_for("CPU"), Defaults())
    assert isinstance(output.result, bytes) and b"schema_version" not in output.result
    ResultsModel.model_validate(json.loads(output.result))  # IBM's documented wire format
    result = NoiseLearnerResultDecoder.decode(output.result.decode())
    assert isinstance(result, NoiseLearnerResult) and len(result.data) == 2
    assert all(isinstance(layer, LayerError) for layer in result.data)
    assert [layer.qubits for layer in result.data] == [[0, 1], [1, 2]]
    assert result.metadata["input_options"]["max_layers_to_learn"] == 4
    assert "not learned by experiments" in output.warnings[0]


def test_readout_box_gets_the_twirled_readout_flip_rate() -> None:
    from qiskit_ibm_runtime.decoders.noise_learner_v3.decoder import NoiseLearnerV3ResultDecoder
    from qiskit_ibm_runtime.noise_learner_v3.params_converters import NOISE_LEARNER_V3_PARAMS_CONVERTERS
    from qiskit_ibm_runtime.options_models import NoiseLearnerV3Options
    from samplomatic import Twirl

    qreg = QuantumRegister(5, "q")
    body = QuantumCircuit(2, 2)
    body.measure([0, 1], [0, 1])
    outer = QuantumCircuit(qreg, body.cregs[0].__class__(2, "c"))
    outer.append(BoxOp(body, annotations=[Twirl()]), [qreg[3], qreg[4]], outer.clbits)
    instruction = outer.data[0]
    assert isinstance(instruction, CircuitInstruction)
    converter = NOISE_LEARNER_V3_PARAMS_CONVERTERS["v0.3"]
    params = converter.encoder([instruction], NoiseLearnerV3Options()).model_dump(mode="json")
    model = NoiseModel()
    model.add_readout_error(ReadoutError([[0.97, 0.03], [0.05, 0.95]]), [3])
    model.add_readout_error(ReadoutError([[0.99, 0.01], [0.01, 0.99]]), [4])
    from qiskit_runtime_server.worker.programs import noise_learner_v3

    original = noise_learner_v3.backend_noise_model
    noise_learner_v3.backend_noise_model = lambda name: model  # type: ignore[assignment]
    try:
        output = run_noise_learner(_encoded(params), "fake_manila", engine_for("CPU"), Defaults())
    finally:
        noise_learner_v3.backend_noise_model = original  # type: ignore[assignment]
    result = NoiseLearnerV3ResultDecoder.decode(output.result.decode())
    assert result.data[0].metadata["learning_protocol"] == "trex"
    noise_map = result.to_pauli_lindblad_maps()[0]
    from qiskit.quantum_info import QubitSparsePauli

    # pauli_fidelity(Z) = 1 - 2p with p the mean of the two flip probabilities.
    assert noise_map.pauli_fidelity(QubitSparsePauli("IZ")) == pytest.approx(1 - 2 * 0.04)
    assert noise_map.pauli_fidelity(QubitSparsePauli("ZI")) == pytest.approx(1 - 2 * 0.01)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"circuits": []}, "non-empty list"),
        ({"circuits": [QuantumCircuit(30)]}, "more than the 5 qubits"),
        ({"circuits": [QuantumCircuit(2)], "options": {"num_randomizations": "many"}}, "num_randomizations"),
        ({"circuits": [QuantumCircuit(2)], "options": {"no_such_option": 1}}, "no_such_option"),
        ({"schema_version": "v9.9", "instructions": {}, "options": {}}, "Unsupported noise learner schema_version"),
        ({"schema_version": "v0.3", "instructions": {"circuit_b64": "!!"}, "options": {}}, "Invalid noise learner"),
    ],
)
def test_unrunnable_params_fail_with_a_reason(params: dict, fragment: str) -> None:
    with pytest.raises(ProgramError, match=fragment):
        run_noise_learner(_encoded(params), "fake_manila", engine_for("CPU"), Defaults())


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        (b'{"circuits": []}', 400, "at least one circuit"),
        (b'{"options": {}}', 400, "at least one circuit"),
        (b'{"circuits": 3}', 400, "Invalid params for program noise-learner"),
        (b'{"schema_version": "v0.9", "instructions": {}}', 400, "Unsupported noise-learner schema_version 'v0.9'"),
        (b'{"schema_version": "v0.3", "options": {}}', 400, "instructions is required"),
        (b'{"schema_version": "v0.3", "instructions": {"circuit_b64": "x"}, "options": {}, "version": 3}', 200, ""),
        # The outline passes; the worker decodes the circuit (the per-job limits only need valid base64).
        (b'{"circuits": [{"__type__": "QuantumCircuit", "__value__": "eA=="}], "options": {}}', 200, ""),
    ],
)
async def test_post_jobs_checks_the_noise_learner_params_outline(
    client: httpx.AsyncClient, params: bytes, status: int, fragment: str
) -> None:
    body = b'{"program_id": "noise-learner", "backend": "fake_manila", "params": ' + params + b"}"
    response = await client.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    if fragment:
        assert fragment in response.json()["errors"][0]["message"]
