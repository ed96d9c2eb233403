"""Resilience (error mitigation and twirling) for program ``estimator`` (EstimatorV2).

IBM's server-side EstimatorV2 applies ``resilience_level`` (default 1) and the explicit
``resilience`` and ``twirling`` options: level 0 nothing, level 1 TREX measurement mitigation
with measurement twirling, level 2 level 1 plus ZNE by gate folding (extrapolators
``("exponential", "linear")``, noise factors ``(1, 3, 5)``) and gate twirling; PEC and PEA
learn each entangling layer's noise first.

No new mitigation maths here: the client ships the same pipeline as its executor Estimator
(``qiskit_ibm_runtime.executor_estimator``: ``finalize_estimator_options``, ``prepare``,
``qiskit_mitigation`` tasks, and the ``estimator_v2`` post-processor with the ZNE
extrapolators). An EstimatorV2 job's options are translated into that Estimator's
``options_models.EstimatorOptions``, each PUB is prepared into a ``QuantumProgram`` (twirled,
folded, noise-injected samplex items plus a TREX calibration item), the items are sampled on the
worker's simulation engine exactly as the ``executor`` program samples them, and the client's
post-processor turns the bits into expectation values, re-shaped into IBM's EstimatorV2 result
(data fields and ``metadata["resilience"]``, ``num_randomizations``...). PEC and PEA take
their layer noise models from :mod:`worker.programs.layer_noise`: the exact twirled noise of the
backend's (or the given) noise model, which is what an ideal noise learner would report.

Each PUB is prepared and post-processed on its own, so PUBs may keep their own precisions (the
executor Estimator refuses mixed precisions in one program; IBM's EstimatorV2 accepts them).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from qiskit.primitives import PrimitiveResult, PubResult
from qiskit.primitives.containers import DataBin
from qiskit.primitives.containers.estimator_pub import EstimatorPub

from qiskit_runtime_server.worker.engines.base import SimulationEngine
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.programs.options import report_ignored

# IBM's default when the client sends no resilience_level (EstimatorOptions docs: "Default: 1").
DEFAULT_RESILIENCE_LEVEL = 1

# Options of the legacy EstimatorV2 the executor Estimator's model has no field for, and why
# they have no effect here (reported in ignored_options and the job log).
_NOT_APPLICABLE = {
    ("resilience", "layer_noise_learning"): "the simulator's noise is known exactly; no learning runs",
    ("resilience", "measure_noise_learning", "shots_per_randomization"): "TREX calibration uses the job's shots",
}

_TWIRLING_KEYS = ("enable_gates", "enable_measure", "num_randomizations", "shots_per_randomization", "strategy")
_RESILIENCE_KEYS = ("measure_mitigation", "measure_noise_learning", "zne_mitigation", "zne", "pec_mitigation", "pec")


@dataclass
class ResiliencePlan:
    """What an EstimatorV2 job asked for, as the executor Estimator's finalized options.

    ``options`` is a finalized ``qiskit_ibm_runtime.options_models.EstimatorOptions``;
    ``active`` is false when nothing (no mitigation, no twirling) applies, so the job runs the
    plain estimation path; ``ignored`` the options that cannot apply, nested as received;
    ``warnings`` what the client's option finalizer warned (e.g. a forced twirling flag);
    ``learned`` the user's ``resilience.layer_noise_model`` as ``LayerError`` objects (PEC/PEA
    then use it instead of the exact noise).
    """

    options: Any
    active: bool
    ignored: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    learned: list[Any] | None = None


def _pop_path(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return None
    return node.pop(path[-1], None)


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def plan_resilience(options: dict[str, Any], resilience_level: Any) -> tuple[ResiliencePlan, dict[str, Any]]:
    """Split an EstimatorV2 job's options into a resilience plan and the options left over.

    ``options`` is the job's ``params["options"]`` (only what the user set, docs/protocol.md §5.2);
    ``resilience_level`` is ``params["resilience_level"]`` or ``None`` (IBM's default, 1). The
    ``twirling`` and ``resilience`` entries are consumed (what cannot apply goes to
    ``plan.ignored``); the returned dict is the rest, for :func:`~worker.programs.options.parse_options`.

    Raises:
        ProgramError: a resilience level other than 0, 1, 2, or options the client's
            ``EstimatorOptions`` model rejects (bad extrapolator, negative noise factor...).
    """
    from pydantic import ValidationError
    from qiskit_ibm_runtime.executor_estimator.finalize_options import finalize_estimator_options
    from qiskit_ibm_runtime.options_models import EstimatorOptions

    rest = copy.deepcopy(options)
    level = DEFAULT_RESILIENCE_LEVEL if resilience_level is None else resilience_level
    if isinstance(level, bool) or level not in (0, 1, 2):
        raise ProgramError(f"resilience_level must be 0, 1 or 2, got {resilience_level!r}.")
    ignored: dict[str, Any] = {}
    reasons = []
    for path, reason in _NOT_APPLICABLE.items():
        value = _pop_path(rest, path)
        if value is not None:
            _set_path(ignored, path, value)
            reasons.append(f"Option {'.'.join(path)} has no effect: {reason}.")
    learned = _learned_layers(_pop_path(rest, ("resilience", "layer_noise_model")))
    model: dict[str, Any] = {"resilience_level": level}
    for name, keys in (("twirling", _TWIRLING_KEYS), ("resilience", _RESILIENCE_KEYS)):
        section = rest.pop(name, None) or {}
        if not isinstance(section, dict):
            raise ProgramError(f"Option {name} must be a mapping.")
        model[name] = {k: v for k, v in section.items() if k in keys}
        for key in set(section) - set(keys):
            ignored.setdefault(name, {})[key] = section[key]
    for name in ("measure_noise_learning",):
        if isinstance(model["resilience"].get(name), dict) and not model["resilience"][name]:
            del model["resilience"][name]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            finalized = finalize_estimator_options(EstimatorOptions(**model))
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ProgramError(f"Invalid estimator option {where}: {first.get('msg')}") from None
    except (ValueError, TypeError) as exc:
        raise ProgramError(f"Invalid estimator options: {exc}") from None
    resilience, twirling = finalized.resilience, finalized.twirling
    active = bool(
        resilience.measure_mitigation
        or resilience.zne_mitigation
        or resilience.pec_mitigation
        or twirling.enable_gates
        or twirling.enable_measure
    )
    needs_noise = resilience.pec_mitigation or (resilience.zne_mitigation and resilience.zne.amplifier == "pea")
    if learned is not None and not needs_noise:
        _set_path(ignored, ("resilience", "layer_noise_model"), f"<{len(learned)} layer errors, used by PEC/PEA only>")
        learned = None
    plan = ResiliencePlan(
        finalized, active, report_ignored(ignored), reasons + [str(w.message) for w in caught], learned
    )
    return plan, rest


def _learned_layers(value: Any) -> list[Any] | None:
    """A user's ``layer_noise_model`` (``NoiseLearnerResult`` or ``LayerError`` list) as a list.

    Raises:
        ProgramError: anything else (e.g. a mapping the decoder could not turn into objects).
    """
    if value is None:
        return None
    layers = list(value.data) if hasattr(value, "data") and not isinstance(value, dict) else value
    if not isinstance(layers, list) or not all(
        hasattr(item, "circuit") and hasattr(item, "qubits") and hasattr(item, "error") for item in layers
    ):
        raise ProgramError("resilience.layer_noise_model must be a NoiseLearnerResult or a list of LayerError.")
    return layers


def _layer_noise(pub: EstimatorPub, options: Any, noise_model: Any, learned: list[Any] | None) -> list[Any]:
    """The executor Estimator's ``layer_noise_model`` for PEC/PEA on ``pub``: the user's learned
    layers if given, else the exact twirled noise of ``noise_model``."""
    from qiskit_ibm_runtime.executor_estimator.prepare import choose_task_class
    from qiskit_ibm_runtime.executor_estimator.utils import estimator_options_to_boxing_options
    from qiskit_mitigation import PEA, PEC, find_combined_unique_layers

    from qiskit_runtime_server.worker.programs.layer_noise import layer_noise_model

    task_class = choose_task_class(options.resilience)
    if task_class not in (PEC, PEA):
        return []
    boxing = estimator_options_to_boxing_options(
        options.twirling,
        measure_mitigation=bool(options.resilience.measure_mitigation),
        inject_noise=True,
        add_tags=False,
    )
    layers = find_combined_unique_layers(
        circuits=[pub.circuit], mitigation_types=[task_class()], custom_boxing_options=boxing, box_types="gates"
    )
    return layer_noise_model(layers, [pub.circuit], noise_model, learned)


def _num_randomizations(options: Any, shots: int) -> tuple[int, int]:
    """``(num_randomizations, shots_per_randomization)`` as ``prepare`` splits ``shots``."""
    from qiskit_ibm_runtime.executor.calculate_twirling_shots import calculate_twirling_shots
    from qiskit_ibm_runtime.executor_estimator.pec import calculate_pec_twirling_shots

    twirling = options.twirling
    if options.resilience.pec_mitigation:
        split = calculate_pec_twirling_shots(shots, twirling.num_randomizations, twirling.shots_per_randomization)
    elif twirling.enable_gates or twirling.enable_measure:
        split = calculate_twirling_shots(shots, twirling.num_randomizations, twirling.shots_per_randomization)
    else:
        return 1, shots
    return int(split[0]), int(split[1])


def _pub_metadata(pub: EstimatorPub, options: Any, shots: int, client_meta: dict[str, Any]) -> dict[str, Any]:
    """IBM's EstimatorV2 PUB metadata: shots, target precision, circuit metadata, resilience."""
    from qiskit_ibm_runtime.executor_estimator.prepare import normalise_extrapolator
    from qiskit_ibm_runtime.executor_estimator.utils import resolve_noise_factors

    num_randomizations, per_randomization = _num_randomizations(options, shots)
    resilience: dict[str, Any] = {}
    if options.resilience.zne_mitigation:
        noise_factors, extrapolated = resolve_noise_factors(options.resilience.zne)
        selected = client_meta.get("resilience", {}).get("zne", {}).get("extrapolators")
        # draw_zne_* reads noise_factors / extrapolated_noise_factors / extrapolators here.
        resilience["zne"] = {
            "noise_factors": [float(x) for x in noise_factors],
            "extrapolated_noise_factors": [float(x) for x in extrapolated],
            "extrapolators": normalise_extrapolator(options.resilience.zne.extrapolator),
            "extrapolator": selected,
        }
    return {
        "shots": num_randomizations * per_randomization,
        "target_precision": pub.precision,
        "circuit_metadata": pub.circuit.metadata,
        "resilience": resilience,
        "num_randomizations": num_randomizations,
    }


def _run_pub(
    index: int,
    pub: EstimatorPub,
    plan: ResiliencePlan,
    backend: str,
    engine: SimulationEngine,
    seed: Any,
    noise_model: Any,
    rng: np.random.Generator,
) -> PubResult:
    from qiskit_ibm_runtime.decoders.executor_estimator.post_processor_v0_1 import estimator_v2_post_processor_v0_1
    from qiskit_ibm_runtime.exceptions import IBMInputValueError
    from qiskit_ibm_runtime.executor_estimator.prepare import prepare
    from qiskit_ibm_runtime.results import QuantumProgramItemResult, QuantumProgramResult

    from qiskit_runtime_server.worker.engines.aer import backend_noise_model
    from qiskit_runtime_server.worker.programs import build_cache
    from qiskit_runtime_server.worker.programs.executor import SimulationChoices, _sample_item, add_empty_pauli_signs

    # Each PUB's change-basis boxes are numbered from zero: they need be distinct only within
    # its own program, and so a loop's jobs repeat the same boxed circuits whichever process
    # prepares each PUB.
    build_cache.start_program()
    options = plan.options.model_copy(deep=True)
    if options.resilience.pec_mitigation or (
        options.resilience.zne_mitigation and options.resilience.zne.amplifier == "pea"
    ):
        model = noise_model if noise_model is not None else backend_noise_model(backend)
        options.resilience.layer_noise_model = _layer_noise(pub, options, model, plan.learned)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program, _ = prepare([pub], options, pub.precision)
    except IBMInputValueError as exc:
        raise ProgramError(f"PUB {index}: {exc.message if hasattr(exc, 'message') else exc}") from None
    except (ValueError, TypeError) as exc:
        raise ProgramError(f"PUB {index}: the resilience options cannot apply: {exc}") from None
    program._semantic_role = "estimator_v2"
    choices = SimulationChoices(seed, noise_model)
    support = _observed_qubits(pub)
    runs = [
        _sample_item(i, item, program.shots, backend, engine, choices, rng, _measuring_only(item.circuit, support))
        for i, item in enumerate(program.items)
    ]
    add_empty_pauli_signs(runs, program.items, program.passthrough_data)
    result = QuantumProgramResult(
        data=[QuantumProgramItemResult(result=run.results, metadata={}) for run in runs],
        metadata=None,
        passthrough_data=program.passthrough_data,
    )
    result._semantic_role = "estimator_v2"
    processed = estimator_v2_post_processor_v0_1(result)
    client_pub = processed[0]
    data = client_pub.data
    fields = {name: np.asarray(value, dtype=float) for name, value in data.items()}
    shots = math.ceil(1.0 / pub.precision**2)
    return PubResult(
        DataBin(**fields, shape=pub.shape), metadata=_pub_metadata(pub, options, shots, client_pub.metadata)
    )


def _observed_qubits(pub: EstimatorPub) -> frozenset[int]:
    """Qubits some Pauli term of ``pub``'s observables acts on."""
    from qiskit.quantum_info import Pauli

    qubits: set[int] = set()
    for term in pub.observables.ravel().tolist() if pub.observables.ndim else [pub.observables.tolist()]:
        for label in term:
            pauli = Pauli(label)
            qubits.update(int(q) for q in np.flatnonzero(pauli.z | pauli.x))
    return frozenset(qubits)


def _measuring_only(circuit: Any, qubits: frozenset[int]) -> Any:
    """``circuit`` without the measurements of qubits outside ``qubits``.

    The mitigation tasks measure every qubit of the circuit, but the post-processor reads, for
    each observable, only the bits of the qubits it acts on (expectation values and TREX factors
    alike). A qubit nobody reads need not be simulated: its bit then reads 0, and its light cone
    (and its wire, see ``qubit_reuse.py``) is left out of the run. A circuit with control flow,
    where a bit may be read back, is returned unchanged.
    """
    from qiskit.circuit import QuantumCircuit

    if not qubits or any(getattr(instruction.operation, "blocks", ()) for instruction in circuit.data):
        return circuit
    reduced: QuantumCircuit = circuit.copy_empty_like()
    dropped = False
    for instruction in circuit.data:
        if instruction.operation.name == "measure" and circuit.find_bit(instruction.qubits[0]).index not in qubits:
            dropped = True
            continue
        reduced._append(instruction)
    return reduced if dropped else circuit


def result_metadata(plan: ResiliencePlan) -> dict[str, Any]:
    """IBM's job-level metadata of an EstimatorV2 result: the options that applied, finalized.

    ``{"twirling": {...}, "resilience": {"measure_mitigation", "zne_mitigation",
    "pec_mitigation", plus the sub-options of each enabled technique}, "version": 2}``, with the
    finalized level-dependent values (not ``None``); the layer noise model is left out.
    """
    options = plan.options
    resilience = options.resilience.model_dump(exclude={"layer_noise_model"})
    for flag, sub in (
        ("zne_mitigation", "zne"),
        ("pec_mitigation", "pec"),
        ("measure_mitigation", "measure_noise_learning"),
    ):
        if not resilience.get(flag):
            resilience.pop(sub, None)
    twirling = options.twirling.model_dump()
    twirling.pop("group", None)  # not an EstimatorV2 option
    return {"resilience_level": options.resilience_level, "twirling": twirling, "resilience": resilience, "version": 2}


def run_mitigated(
    pubs: list[EstimatorPub],
    plan: ResiliencePlan,
    backend: str,
    engine: SimulationEngine,
    *,
    seed: int | None,
    noise_model: Any,
) -> PrimitiveResult:
    """Run ``pubs`` through the executor Estimator's mitigation pipeline on ``executor``.

    Returns a ``PrimitiveResult`` of ``PubResult`` with IBM's EstimatorV2 fields: ``evs``,
    ``stds``, ``ensemble_standard_error`` (levels 0/1, PEC) or the ZNE fields (``evs_noise_factors``,
    ``stds_noise_factors``, ``ensemble_stds_noise_factors``, ``evs_extrapolated``,
    ``stds_extrapolated``), all of shape ``pub.shape`` (plus the noise-factor / extrapolator
    axes), and :func:`result_metadata` as its metadata.

    Raises:
        ProgramError: options the pipeline refuses for a PUB (PEC with ZNE, too few noise
            factors for an extrapolator, TREX with projector observables...), or a PUB that
            cannot be sampled.
    """
    if plan.options.resilience.pec_mitigation and plan.options.resilience.zne_mitigation:
        raise ProgramError("PEC mitigation and ZNE mitigation are incompatible with one another.")
    from qiskit_runtime_server.worker.programs import build_cache

    build_cache.install()  # a loop's jobs share their pieces' samplex builds (build_cache.py)
    # One generator per PUB, so the values do not depend on which process ran which PUB.
    rngs = np.random.default_rng(seed).spawn(len(pubs))
    work = partial(_run_pub_item, plan, backend, seed, noise_model)
    items = list(zip(range(len(pubs)), pubs, rngs, strict=True))
    # Forked helpers on a GPU worker would inherit its CUDA context, which does not survive a fork.
    processes = engine.processes if engine.device == "CPU" else 1
    if processes > 1 and len(pubs) > 1:
        from qiskit_runtime_server.worker.programs.piece_pool import pool_for

        cap = getattr(engine, "max_job_seconds", None)
        remaining = None if cap is None else cap - engine.report.predicted_seconds
        results, reports = pool_for(engine, processes).map(
            work, items, [len(pub.circuit.data) for pub in pubs], remaining
        )
        for report in reports:
            engine.report.absorb(report)
        engine.report.processes = min(processes, len(pubs))
    else:
        results = [work(engine, item) for item in items]
    return PrimitiveResult(results, metadata=result_metadata(plan))


def _run_pub_item(
    plan: ResiliencePlan,
    backend: str,
    seed: Any,
    noise_model: Any,
    engine: SimulationEngine,
    item: tuple[int, EstimatorPub, np.random.Generator],
) -> PubResult:
    """:func:`_run_pub` for ``(index, pub, rng)``, in the form ``piece_pool.PiecePool.map`` calls."""
    index, pub, rng = item
    return _run_pub(index, pub, plan, backend, engine, seed, noise_model, rng)
