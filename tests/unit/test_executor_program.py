"""The ``executor`` program in process: decoding every schema version, encoding, failures.

Params are built the way the client builds them (``QUANTUM_PROGRAM_PARAMS_CONVERTERS[v].encoder``
and ``model_dump(mode="json")``), including the v1.0/v1.1 schemas that older clients send, and
results are decoded with the client's own executor decoder chain.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import QuantumProgram
from qiskit_ibm_runtime.decoders.defaults import DEFAULT_DECODERS
from qiskit_ibm_runtime.executor_sampler.prepare import prepare
from qiskit_ibm_runtime.fake_provider import FakeManilaV2
from qiskit_ibm_runtime.options_models import ExecutorOptions, SamplerOptions
from qiskit_ibm_runtime.quantum_program.params_converters import QUANTUM_PROGRAM_PARAMS_CONVERTERS

from qiskit_runtime_server.worker.engines.aer import engine_for
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import Defaults, ExecutionRequest
from qiskit_runtime_server.worker.programs.executor import decode_executor_params, run_executor
from qiskit_runtime_server.worker.simulation_process import decode_params, execute

VERSIONS = ["v1.0", "v1.1", "v2.0"]


def encode(program: QuantumProgram, version: str, options: ExecutorOptions | None = None) -> dict[str, Any]:
    converter = QUANTUM_PROGRAM_PARAMS_CONVERTERS[version]
    return converter.encoder(program, options or ExecutorOptions()).model_dump(mode="json")


def client_decode(text: bytes) -> Any:
    """What ``job.result()`` does with the body of ``GET /jobs/{id}/results``."""
    value: Any = text.decode()
    for decoder in DEFAULT_DECODERS["executor"]:  # chained, skipping the inapplicable (RuntimeJobV2.result)
        if decoder.is_applicable(value):
            value = decoder.decode(value)
    return value


def run(params: dict[str, Any], backend: str = "fake_manila") -> bytes:
    output = run_executor(json.loads(json.dumps(params)), backend, engine_for("CPU"), Defaults())
    assert isinstance(output.result, bytes)
    return output.result


def sweep_program(shots: int = 200) -> QuantumProgram:
    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.measure_all()
    # Items must be ISA for the backend, as on IBM (worker/programs/isa_check.py).
    qc = generate_preset_pass_manager(backend=FakeManilaV2(), optimization_level=0, initial_layout=[0, 1]).run(qc)
    values = np.array([[0.0], [np.pi]])
    program = QuantumProgram(shots=shots)
    program.append_circuit_item(qc, circuit_arguments=values)
    return program


def twirled_bell_program(shots: int = 400) -> QuantumProgram:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    options = SamplerOptions()
    options.twirling.enable_gates = True
    options.twirling.enable_measure = True
    options.twirling.num_randomizations = 4
    program, _ = prepare([qc], options, shots)
    program._semantic_role = "sampler_v2"
    return program


@pytest.mark.parametrize("version", VERSIONS)
def test_circuit_item_round_trip(version: str) -> None:
    program = sweep_program()
    params = encode(program, version)
    assert params["schema_version"] == version
    text = run(params)
    body = json.loads(text)
    assert body["schema_version"] == version
    assert body["semantic_role"] is None and body["passthrough_data"] is None
    result = client_decode(text)
    bits = result[0]["meas"]
    assert bits.shape == (2, 200, 2) and bits.dtype == bool
    # theta = 0 gives |00>, theta = pi gives |11> (up to the backend's noise)
    assert np.mean(bits[0]) < 0.15 and np.mean(bits[1]) > 0.85
    [span] = result.metadata.chunk_timing
    assert span.stop >= span.start and span.parts[0].size == 2


@pytest.mark.parametrize("version", VERSIONS)
def test_twirled_sampler_round_trip(version: str) -> None:
    program = twirled_bell_program()
    params = encode(program, version)
    assert params["quantum_program"]["items"][0]["item_type"] == "samplex"
    text = run(params)
    body = json.loads(text)
    assert body["semantic_role"] == "sampler_v2"
    assert body["passthrough_data"] == params["quantum_program"]["passthrough_data"]
    assert "measurement_flips.meas" in body["data"][0]["results"]
    counts = client_decode(text)[0].data.meas.get_counts()
    assert sum(counts.values()) == 400
    assert counts.get("00", 0) + counts.get("11", 0) > 0.8 * 400


def test_decoded_samplex_is_finalized() -> None:
    decoded = decode_executor_params(encode(twirled_bell_program(), "v2.0"))
    assert decoded.program.items[0].samplex._finalized


def test_seed_in_experimental_options_repeats_results() -> None:
    program = sweep_program()
    params = encode(program, "v2.0", ExecutorOptions(experimental={"simulator": {"seed_simulator": 5}}))
    first, second = json.loads(run(params)), json.loads(run(params))
    assert first["data"] == second["data"]


def test_empty_noise_model_is_ideal() -> None:
    program = sweep_program(shots=2000)
    options = ExecutorOptions(experimental={"simulator": {"noise_model": {}}})
    bits = client_decode(run(encode(program, "v2.0", options)))[0]["meas"]
    assert not bits[0].any() and bits[1].all()


def failure(params: dict[str, Any], backend: str = "fake_manila") -> str:
    with pytest.raises(ProgramError) as info:
        run(params, backend)
    return str(info.value)


def test_unknown_schema_version_fails_clearly() -> None:
    params = encode(sweep_program(), "v2.0")
    params["schema_version"] = "v9.9"
    assert "Unsupported executor schema_version 'v9.9'" in failure(params)


def test_malformed_tensor_fails_clearly() -> None:
    params = encode(sweep_program(), "v2.0")
    params["quantum_program"]["items"][0]["circuit_arguments"]["shape"] = [5, 1]
    assert "Invalid executor params (v2.0)" in failure(params)
    params["quantum_program"]["items"][0]["circuit_arguments"]["data"] = "not base64 zlib"
    assert "Invalid executor params" in failure(params)


def test_broken_samplex_fails_clearly() -> None:
    params = encode(twirled_bell_program(), "v2.0")
    params["quantum_program"]["items"][0]["samplex"]["samplex_json"] = '{"directed": true}'
    message = failure(params)
    assert "samplex" in message.lower() or "could not be decoded" in message


def test_kerneled_measurements_are_refused() -> None:
    params = encode(sweep_program(), "v2.0")
    params["quantum_program"]["meas_level"] = "kerneled"
    assert "meas_level 'kerneled'" in failure(params)


def test_circuit_wider_than_backend() -> None:
    qc = QuantumCircuit(7)
    qc.measure_all()
    program = QuantumProgram(shots=10)
    program.append_circuit_item(qc)
    assert "more than the 5 qubits" in failure(encode(program, "v2.0"))


def test_execute_reads_executor_params_as_plain_json() -> None:
    params = encode(sweep_program(), "v2.0")
    raw = json.dumps(params).encode()
    assert decode_params(raw, plain=True) == params
    outcome = execute(ExecutionRequest("job", "executor", "fake_manila", raw))
    assert json.loads(outcome.result)["schema_version"] == "v2.0" and outcome.num_pubs == 1


def test_samplex_that_fails_to_finalize(monkeypatch: pytest.MonkeyPatch) -> None:
    from samplomatic.samplex import Samplex

    params = encode(twirled_bell_program(), "v2.0")  # the client finalizes while building

    def broken(self: Samplex) -> None:
        raise RuntimeError("dangling node")

    monkeypatch.setattr(Samplex, "finalize", broken)
    message = failure(params)
    assert message == "Item 0: the samplex could not be finalized: dangling node"


def test_pec_items_without_noisy_boxes_get_empty_pauli_signs() -> None:
    """A PEC item whose samplex injects no noise (no entangling layer) has no ``pauli_signs``
    output; the client's PEC post-processing needs the key, so it is sent with 0 boxes."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from qiskit_runtime_server.worker.programs.executor import ItemRun, add_empty_pauli_signs, pec_items

    passthrough = {
        "qiskit_mitigation": [
            {"mitigation": "pec", "program_item_index": 0},
            {"mitigation": "trex", "program_item_index": 1},
            {"mitigation": "pec", "program_item_index": 2},
        ]
    }
    assert pec_items(passthrough) == {0, 2}
    assert pec_items({}) == set() and pec_items(None) == set()
    now = datetime.now(UTC)
    signs = np.ones((4, 3, 1), dtype=bool)
    runs = [
        ItemRun({"_meas": np.zeros((4, 3, 8, 2), dtype=bool)}, 12, 2, now, now),
        ItemRun({"_meas": np.zeros((4, 8, 2), dtype=bool)}, 4, 1, now, now),
        ItemRun({"_meas": np.zeros((4, 3, 8, 2), dtype=bool), "pauli_signs": signs}, 12, 2, now, now),
    ]
    items = [SimpleNamespace(shape=(4, 3)), SimpleNamespace(shape=(4,)), SimpleNamespace(shape=(4, 3))]
    add_empty_pauli_signs(runs, items, passthrough)
    assert runs[0].results["pauli_signs"].shape == (4, 3, 0) and runs[0].results["pauli_signs"].dtype == bool
    assert "pauli_signs" not in runs[1].results  # TREX calibration item
    assert runs[2].results["pauli_signs"] is signs  # the samplex's own signs are kept
