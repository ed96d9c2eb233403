"""``NoiseLearner`` params (``ibm_quantum_schemas.noise_learner_v2``): circuits in, ``NoiseLearnerResult`` out.

Layers are found as the client's boxing pass manager groups gates for the ``twirling_strategy``
(``worker/programs/noise_learner.py`` describes the program).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qiskit import QuantumCircuit
from qiskit_aer.noise import NoiseModel

from qiskit_runtime_server.worker.engines.aer import backend_noise_model
from qiskit_runtime_server.worker.engines.base import SimulationEngine
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.programs.noise_learner_fit import (
    Dressing,
    LayerNoise,
    box_dressing,
    coupling_edges,
    first_error,
    layer_noise,
)
from qiskit_runtime_server.worker.programs.primitives import ProgramOutput

_STRATEGIES = {"active": "active", "active-accum": "active_accum", "active-circuit": "active_circuit", "all": "all"}


@dataclass
class _Layer:
    """A unique layer found in the circuits: its box qubits, two-qubit gates and occurrences."""

    qubits: list[int]
    gates: list[tuple[Any, tuple[int, ...]]]
    dressing: Dressing | None
    count: int = 0
    first_seen: int = 0


def _circuits(params: dict[str, Any], width: int) -> list[QuantumCircuit]:
    from qiskit import qasm3

    raw = params.get("circuits")
    if not isinstance(raw, list) or not raw:
        raise ProgramError("params.circuits must be a non-empty list of circuits.")
    circuits = []
    for index, circuit in enumerate(raw):
        if isinstance(circuit, str):
            try:
                circuit = qasm3.loads(circuit)
            except Exception as exc:  # the importer raises many types
                raise ProgramError(f"Circuit {index} is not valid OpenQASM 3: {exc}") from None
        if not isinstance(circuit, QuantumCircuit):
            raise ProgramError(f"Circuit {index} must be a QuantumCircuit or an OpenQASM 3 string.")
        if circuit.num_qubits > width:
            raise ProgramError(
                f"Circuit {index} has {circuit.num_qubits} qubits, more than the {width} qubits of the backend."
            )
        circuits.append(circuit)
    return circuits


def _v2_options(raw: Any) -> tuple[Any, NoiseModel | None]:
    """The validated ``OptionsModel`` and the ``simulator.noise_model`` (a decoded Aer model)."""
    from ibm_quantum_schemas.noise_learner_v2.version_0_1 import OptionsModel
    from pydantic import ValidationError

    options = dict(raw or {})
    if not isinstance(raw, dict | None):
        raise ProgramError("params.options must be a mapping.")
    simulator = options.get("simulator")
    noise_model = None
    if isinstance(simulator, dict) and "noise_model" in simulator:
        simulator = dict(simulator)
        noise_model = simulator.pop("noise_model")
        if noise_model is not None and not isinstance(noise_model, NoiseModel):
            raise ProgramError("Option simulator.noise_model must be a qiskit_aer NoiseModel.")
        options["simulator"] = simulator
    try:
        return OptionsModel.model_validate(options), noise_model
    except ValidationError as exc:
        raise ProgramError(f"Invalid noise learner options: {first_error(exc)}") from None


def find_layers(circuits: Sequence[QuantumCircuit], strategy: str) -> list[_Layer]:
    """The unique layers of two-qubit gates in ``circuits``, most frequent first.

    Layers are the twirled boxes of samplomatic's boxing pass manager for ``strategy`` (IBM's
    ``twirling_strategy`` name); two boxes are the same layer when they twirl the same qubits and
    hold the same two-qubit gates. Ties are broken by the number of two-qubit gates (more first),
    then by first occurrence.
    """
    from samplomatic.transpiler import generate_boxing_pass_manager
    from samplomatic.utils import undress_box

    manager = generate_boxing_pass_manager(
        enable_gates=True,
        enable_measures=False,
        twirling_strategy=_STRATEGIES[strategy],
    )
    layers: dict[tuple[Any, ...], _Layer] = {}
    for circuit in circuits:
        boxed = manager.run(circuit)
        for instruction in boxed.data:
            if instruction.operation.name != "box":
                continue
            box = undress_box(instruction.operation)
            outer = [boxed.find_bit(q).index for q in instruction.qubits]
            inner = {q: outer[i] for i, q in enumerate(box.body.qubits)}
            gates = [
                (op.operation, tuple(inner[q] for q in op.qubits))
                for op in box.body.data
                if op.operation.num_qubits == 2 and op.operation.name != "barrier"
            ]
            if not gates:
                continue
            key = (
                tuple(sorted(outer)),
                tuple(sorted((op.name, qargs, tuple(map(str, op.params))) for op, qargs in gates)),
            )
            dressing = box_dressing(instruction.operation)
            layer = layers.setdefault(key, _Layer(sorted(outer), gates, dressing, first_seen=len(layers)))
            layer.count += 1
    return sorted(layers.values(), key=lambda layer: (-layer.count, -len(layer.gates), layer.first_seen))


def _pauli_list(noise: LayerNoise) -> Any:
    from qiskit.quantum_info import PauliList

    n = len(noise.qubits)
    labels = []
    for generator in noise.generators:
        label = ["I"] * n
        for q, p in generator:
            label[n - 1 - q] = p
        labels.append("".join(label))
    return PauliList(labels)


def run_noise_learner_v2(params: dict[str, Any], backend: str, engine: SimulationEngine) -> ProgramOutput:
    """``NoiseLearner`` params: circuits in, ``NoiseLearnerResult`` of ``LayerError`` out (as IBM encodes it).

    Raises:
        ProgramError: no circuits, a circuit wider than the backend, options the schema rejects.
    """
    from qiskit_ibm_runtime import RuntimeEncoder
    from qiskit_ibm_runtime.results import LayerError, PauliLindbladError

    circuits = _circuits(params, engine.num_qubits(backend))
    options, custom_model = _v2_options(params.get("options"))
    model = custom_model if custom_model is not None else backend_noise_model(backend)
    coupling = coupling_edges(backend)
    layers = find_layers(circuits, options.twirling_strategy)
    if options.max_layers_to_learn is not None:
        layers = layers[: options.max_layers_to_learn]
    data = []
    for layer in layers:
        noise = layer_noise(layer.qubits, layer.gates, model, coupling, dressing=layer.dressing)
        local = {q: i for i, q in enumerate(noise.qubits)}
        circuit = QuantumCircuit(len(noise.qubits))
        for operation, qargs in layer.gates:
            circuit.append(operation, [local[q] for q in qargs])
        error = PauliLindbladError(_pauli_list(noise), noise.rates)
        data.append(LayerError(circuit, noise.qubits, error))
    metadata = {
        "backend": backend,
        "input_options": {
            "max_layers_to_learn": options.max_layers_to_learn,
            "shots_per_randomization": options.shots_per_randomization,
            "num_randomizations": options.num_randomizations,
            "layer_pair_depths": list(options.layer_pair_depths),
            "twirling_strategy": options.twirling_strategy,
        },
    }
    warnings = [
        f"noise-learner: {len(data)} layer(s) computed from the "
        f"{'given' if custom_model is not None else 'backend'} noise model (Pauli-twirled gate errors), "
        "not learned by experiments; shots_per_randomization, num_randomizations and layer_pair_depths "
        "have no effect on a simulator."
    ]
    # IBM's ResultsModel (noise_learner_v2): {"data": [LayerError as "_json"], "metadata"} in
    # RuntimeEncoder JSON; the client's NoiseLearnerResultDecoder turns it into a
    # NoiseLearnerResult (it takes any text without "schema_version" for this format).
    text = json.dumps({"data": data, "metadata": metadata}, cls=RuntimeEncoder).encode()
    return ProgramOutput(text, warnings, len(circuits))
