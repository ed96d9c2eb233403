"""The ``sampler`` and ``estimator`` programs (V2 primitives, docs/protocol.md §5.2).

``params`` decoded with the client's ``RuntimeDecoder`` hold ``pubs`` as lists:
sampler ``[circuit, parameter_values, shots|None]``, estimator
``[circuit, observables, parameter_values, precision|None]``; ``parameter_values`` is an array
of shape ``(*bind_shape, n_params)`` (``(0,)`` without parameters). They are coerced into
Qiskit's ``SamplerPub``/``EstimatorPub``, run on the simulation engine, and the ``PrimitiveResult`` is
returned with the ignored options added to its metadata.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.primitives import PrimitiveResult, PubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub

from qiskit_runtime_server.worker.engines.base import SimulationEngine
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs.isa_check import check_isa
from qiskit_runtime_server.worker.programs.options import SimulatorChoices, parse_options
from qiskit_runtime_server.worker.programs.served import for_served_backend


@dataclass
class ProgramOutput:
    """A finished program: its result and the warnings for the job log.

    ``result`` is a ``PrimitiveResult`` (sent as RuntimeEncoder JSON) or, for programs whose
    results follow a published schema (``executor``), the already encoded JSON bytes.
    ``billable`` is false for dry runs on mock backends: no usage is counted for them.
    """

    result: PrimitiveResult | bytes
    warnings: list[str] = field(default_factory=list)
    num_pubs: int = 0
    billable: bool = True


def _parameter_values(circuit: QuantumCircuit, values: Any) -> Any:
    if values is None:
        return None
    array = np.asarray(values, dtype=float)
    if circuit.num_parameters == 0 and array.size == 0:
        return None
    if array.ndim == 0 or array.shape[-1] != circuit.num_parameters:
        raise ProgramError(
            f"parameter_values has shape {array.shape} but the circuit has {circuit.num_parameters} "
            "parameters (the last axis must match)."
        )
    return array


def _check_width(circuit: Any, backend_qubits: int, index: int) -> QuantumCircuit:
    if not isinstance(circuit, QuantumCircuit):
        raise ProgramError(f"PUB {index}: the first element must be a QuantumCircuit or an OpenQASM 3 string.")
    if circuit.num_qubits > backend_qubits:
        raise ProgramError(
            f"PUB {index}: the circuit has {circuit.num_qubits} qubits, more than the "
            f"{backend_qubits} qubits of the backend."
        )
    return circuit


def _pub_items(params: dict[str, Any]) -> list[list[Any]]:
    pubs = params.get("pubs")
    if not isinstance(pubs, list) or not pubs:
        raise ProgramError("params.pubs must be a non-empty list of PUBs.")
    return [list(p) if isinstance(p, (list, tuple)) else [p] for p in pubs]


def _warnings(choices: SimulatorChoices, extra: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    ignored = dict(choices.ignored)
    ignored.update(extra)
    if not ignored:
        return {}, []
    return ignored, [f"Options with no effect on a simulator were accepted and ignored: {sorted(ignored)}"]


def _with_metadata(result: PrimitiveResult, ignored: dict[str, Any], engine: SimulationEngine) -> PrimitiveResult:
    metadata = dict(result.metadata)
    metadata["simulator"] = {"device": engine.device, **engine.report.metadata()}
    if ignored:
        metadata["ignored_options"] = ignored
    return PrimitiveResult(list(result), metadata=metadata)


def _with_execution_spans(
    result: PrimitiveResult, pubs: list[SamplerPub], shots: int, start: datetime, stop: datetime
) -> PrimitiveResult:
    """Add IBM's ``metadata["execution"]["execution_spans"]`` to a sampler result.

    All PUBs are simulated in one engine call, so one ``DoubleSliceSpan`` from its start to
    its stop (UTC) covers every shot of every PUB: ``{pub index: ((*pub.shape, shots),
    slice over the flattened bindings, slice over the shots)}``.
    """
    from qiskit_ibm_runtime.execution_span import DoubleSliceSpan, ExecutionSpans

    slices = {}
    for index, pub in enumerate(pubs):
        pub_shots = pub.shots if pub.shots is not None else shots
        slices[index] = ((*pub.shape, pub_shots), slice(0, math.prod(pub.shape)), slice(0, pub_shots))
    metadata = dict(result.metadata)
    metadata["execution"] = {"execution_spans": ExecutionSpans([DoubleSliceSpan(start, stop, slices)])}
    return PrimitiveResult(list(result), metadata=metadata)


def run_sampler(params: dict[str, Any], backend: str, engine: SimulationEngine, defaults: Defaults) -> ProgramOutput:
    """Run sampler ``params`` on ``backend``.

    Shots: the PUB's own, else ``options.default_shots``, else ``defaults.shots``.

    Raises:
        ProgramError: malformed PUBs, a circuit wider than the backend, shots out of range.
    """
    choices = parse_options(params.get("options"), estimator=False)
    shots = choices.default_shots or defaults.shots
    width = engine.num_qubits(backend)
    pubs = []
    for i, item in enumerate(_pub_items(params)):
        circuit = _check_width(item[0], width, i)
        check_isa(circuit, backend, f"PUB {i}")
        values = _parameter_values(circuit, item[1] if len(item) > 1 else None)
        pub_shots = item[2] if len(item) > 2 else None
        if pub_shots is not None and (not isinstance(pub_shots, int) or pub_shots < 1):
            raise ProgramError(f"PUB {i}: shots must be a positive integer, got {pub_shots!r}.")
        if (pub_shots or shots) > defaults.max_shots:
            raise ProgramError(f"PUB {i}: at most {defaults.max_shots} shots are allowed.")
        try:
            pubs.append(SamplerPub.coerce((circuit, values, pub_shots), shots))
        except (ValueError, TypeError) as exc:
            raise ProgramError(f"PUB {i} is invalid: {exc}") from None
    ignored, warnings = _warnings(choices, {})
    start = datetime.now(UTC)
    result = engine.sample(backend, pubs, shots=shots, seed=choices.seed, noise_model=choices.noise_model)
    result = _with_execution_spans(result, pubs, shots, start, datetime.now(UTC))
    return ProgramOutput(_with_metadata(result, ignored, engine), warnings, len(pubs))


def run_estimator(params: dict[str, Any], backend: str, engine: SimulationEngine, defaults: Defaults) -> ProgramOutput:
    """Run estimator ``params`` on ``backend``.

    Precision: the PUB's own, else ``options.default_precision``, else ``1/sqrt(default_shots)``
    when only shots were set (as local testing mode does), else ``defaults.precision``.

    Resilience as on IBM (``estimator_resilience.py``): ``resilience_level`` (default 1) and the
    ``resilience``/``twirling`` options run the client's executor-Estimator mitigation pipeline
    (TREX, ZNE, PEC, PEA, twirling); with no mitigation and no twirling (level 0) the plain
    estimation path runs.

    Raises:
        ProgramError: malformed PUBs or observables, a circuit wider than the backend, or
            resilience options IBM refuses (bad level, PEC with ZNE...).
    """
    from qiskit_runtime_server.worker.programs.estimator_cones import run_by_light_cones
    from qiskit_runtime_server.worker.programs.estimator_resilience import (
        plan_resilience,
        result_metadata,
        run_mitigated,
    )

    raw_options = params.get("options") or {}
    if not isinstance(raw_options, dict):
        raise ProgramError("params.options must be a mapping.")
    plan, rest = plan_resilience(raw_options, params.get("resilience_level"))
    choices = parse_options(rest, estimator=True)
    precision = choices.default_precision
    if precision is None and choices.default_shots:
        precision = 1 / math.sqrt(choices.default_shots)
    precision = precision or defaults.precision
    width = engine.num_qubits(backend)
    pubs = []
    for i, item in enumerate(_pub_items(params)):
        if len(item) < 2:
            raise ProgramError(f"PUB {i}: an estimator PUB needs a circuit and observables.")
        circuit = _check_width(item[0], width, i)
        check_isa(circuit, backend, f"PUB {i}")
        values = _parameter_values(circuit, item[2] if len(item) > 2 else None)
        pub_precision = item[3] if len(item) > 3 else None
        try:
            pubs.append(EstimatorPub.coerce((circuit, item[1], values, pub_precision), precision))
        except (ValueError, TypeError, KeyError) as exc:
            raise ProgramError(f"PUB {i} is invalid: {exc}") from None
    ignored, warnings = _warnings(choices, plan.ignored)
    warnings.extend(plan.warnings)

    def run(batch: list[EstimatorPub]) -> PrimitiveResult:
        if plan.active:
            return run_mitigated(batch, plan, backend, engine, seed=choices.seed, noise_model=choices.noise_model)
        # Level 0 without twirling: the plain estimation path.
        plain = engine.estimate(backend, batch, precision=precision, seed=choices.seed, noise_model=choices.noise_model)
        pub_results = [
            PubResult(r.data, metadata={**r.metadata, "resilience": {}, "num_randomizations": 1}) for r in plain
        ]
        return PrimitiveResult(pub_results, metadata={**plain.metadata, **result_metadata(plan)})

    result = run_by_light_cones(pubs, run, engine, choices.noise_model)
    return ProgramOutput(_with_metadata(result, ignored, engine), warnings, len(pubs))


PROGRAMS = {"sampler": for_served_backend(run_sampler), "estimator": for_served_backend(run_estimator)}
