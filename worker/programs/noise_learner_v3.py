"""``NoiseLearnerV3`` params (``ibm_quantum_schemas.noise_learner_v3``): one result per boxed instruction.

Gate layers get the Pauli-Lindblad model of ``noise_learner_fit.py``, measurement boxes (TREX)
one ``X`` generator per qubit (``worker/programs/noise_learner.py`` describes the program).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qiskit.circuit import CircuitInstruction, QuantumRegister

from qiskit_runtime_server.worker.engines.aer import backend_noise_model
from qiskit_runtime_server.worker.engines.base import SimulationEngine
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.programs.noise_learner_fit import (
    box_dressing,
    coupling_edges,
    first_error,
    layer_noise,
    readout_noise,
)
from qiskit_runtime_server.worker.programs.primitives import ProgramOutput


def _physical_qubits(instruction: CircuitInstruction, width: int, index: int) -> list[int]:
    physical = {bit: i for i, bit in enumerate(QuantumRegister(width, "q"))}
    try:
        return [physical[q] for q in instruction.qubits]
    except KeyError:
        raise ProgramError(
            f"Instruction {index}: every qubit must be a qubit of the backend's register q ({width} qubits)."
        ) from None


def _lindblad_metadata(depths: Sequence[int], qubits: Sequence[int], post_selection: bool) -> dict[str, Any]:
    # No shot is simulated, so none is discarded: every depth keeps all its shots.
    return {
        "learning_protocol": "lindblad",
        "post_selection": {
            "fraction_kept": {depth: 1.0 for depth in depths},
            "success_rates": {depth: ({q: 1.0 for q in qubits} if post_selection else {}) for depth in depths},
        },
    }


def run_noise_learner_v3(params: dict[str, Any], backend: str, engine: SimulationEngine) -> ProgramOutput:
    """``NoiseLearnerV3`` params (any ``schema_version`` the client has converters for).

    Raises:
        ProgramError: unknown schema version, params the schema rejects, an instruction that is
            not a box on the backend's qubits or that no learning protocol covers.
    """
    from pydantic import ValidationError
    from qiskit.quantum_info import QubitSparsePauliList
    from qiskit_ibm_runtime.noise_learner_v3 import converters
    from qiskit_ibm_runtime.noise_learner_v3.find_learning_protocol import find_learning_protocol
    from qiskit_ibm_runtime.noise_learner_v3.learning_protocol import LearningProtocol
    from qiskit_ibm_runtime.noise_learner_v3.params_converters import NOISE_LEARNER_V3_PARAMS_CONVERTERS
    from qiskit_ibm_runtime.results import NoiseLearnerV3Result, NoiseLearnerV3Results
    from samplomatic import InjectNoise
    from samplomatic.utils import get_annotation, undress_box

    version = params.get("schema_version")
    converter = NOISE_LEARNER_V3_PARAMS_CONVERTERS.get(version) if isinstance(version, str) else None
    encode = getattr(converters, f"noise_learner_v3_result_to_{str(version)[1:].replace('.', '_')}", None)
    if converter is None or encode is None:
        raise ProgramError(
            f"Unsupported noise learner schema_version {version!r}; "
            f"this server accepts {sorted(NOISE_LEARNER_V3_PARAMS_CONVERTERS)}."
        )
    try:
        model_params = converter.model.model_validate(params)
    except ValidationError as exc:
        raise ProgramError(f"Invalid noise learner params ({version}): {first_error(exc)}") from None
    except Exception as exc:  # corrupt base64/QPY inside validators
        raise ProgramError(f"Invalid noise learner params ({version}): {type(exc).__name__}: {exc}") from None
    try:
        instructions, options = converter.decoder(model_params)
    except Exception as exc:  # QPY decoding raises many types
        raise ProgramError(f"The instructions could not be decoded ({version}): {type(exc).__name__}: {exc}") from None
    if not instructions:
        raise ProgramError("params.instructions holds no instruction to learn.")

    width = engine.num_qubits(backend)
    model = backend_noise_model(backend)
    coupling = coupling_edges(backend)
    depths = list(options.layer_pair_depths)
    post_selection = bool(getattr(getattr(model_params.options, "post_selection", None), "enable", False))
    results = []
    for index, instruction in enumerate(instructions):
        if instruction.operation.name != "box":
            raise ProgramError(f"Instruction {index}: expected a 'box' but found '{instruction.operation.name}'.")
        qubits = _physical_qubits(instruction, width, index)
        try:
            protocol = find_learning_protocol(instruction)
        except Exception as exc:
            raise ProgramError(f"Instruction {index}: {exc}") from None
        box = undress_box(instruction.operation)
        inner = dict(zip(instruction.operation.body.qubits, qubits, strict=True))
        if protocol is LearningProtocol.PAULI_LINDBLAD:
            annotation = get_annotation(instruction.operation, InjectNoise)
            site = str(getattr(getattr(annotation, "site", None), "value", "after")).lower()
            body = [(op.operation, tuple(inner[q] for q in op.qubits)) for op in box.body.data]
            noise = layer_noise(qubits, body, model, coupling, site=site, dressing=box_dressing(instruction.operation))
            metadata = _lindblad_metadata(depths, noise.qubits, post_selection)
        elif protocol is LearningProtocol.TREX:
            measured = [inner[op.qubits[0]] for op in box.body.data if op.operation.name == "measure"]
            noise = readout_noise(measured, model)
            metadata = {
                "learning_protocol": "trex",
                "post_selection": {"fraction_kept": 1.0, "success_rates": {q: 1.0 for q in noise.qubits}},
            }
        else:
            raise ProgramError(
                f"Instruction {index} cannot be learned by any of the supported learning protocols "
                "(a layer of Clifford gates on distinct qubits, or one measurement per qubit)."
            )
        n = len(noise.qubits)
        generators = [
            QubitSparsePauliList.from_sparse_list([("".join(p for _, p in generator), [q for q, _ in generator])], n)
            for generator in noise.generators
        ]
        results.append(NoiseLearnerV3Result.from_generators(generators, noise.rates, metadata=metadata))
    text = encode(NoiseLearnerV3Results(results)).model_dump_json().encode()
    warnings = [
        f"noise-learner: {len(results)} instruction(s) computed from the backend noise model "
        "(Pauli-twirled gate errors, twirled readout errors), not learned by experiments."
    ]
    return ProgramOutput(text, warnings, len(results))
