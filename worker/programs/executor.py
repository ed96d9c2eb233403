"""The ``executor`` program: a ``QuantumProgram`` from ``Executor`` or the client-side primitives.

``qiskit_ibm_runtime.executor_sampler.Sampler``, ``executor_estimator.Estimator`` and the raw
``Executor`` send plain pydantic JSON (docs/protocol.md §5.3). It is decoded with the client's own
``QUANTUM_PROGRAM_PARAMS_CONVERTERS`` for its ``schema_version``, every item runs through the
worker's engine seam (the backend's noise model by default, as for ``sampler``), and the answer
is the ``ibm_quantum_schemas`` ``QuantumProgramResultModel`` of the same schema version, echoing
``semantic_role`` and ``passthrough_data`` so the client's post-processors build a
``PrimitiveResult`` (docs/protocol.md §5.5, P10).

Samplex items (twirling, TREX, every estimator PUB) are sampled on the server with samplomatic,
broadcast over the item's shape with the client's own ``broadcast_sample`` (the building block of
its local-mode reference executor), and the samplex outputs other than ``parameter_values`` (e.g.
``measurement_flips.*``) are returned next to the measured bits, as IBM's executor does.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from qiskit_runtime_server.shared.executor_schemas import EXECUTOR_SCHEMA_VERSIONS
from qiskit_runtime_server.worker.engines.base import SimulationEngine
from qiskit_runtime_server.worker.engines.methods import predict_item_overhead
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs.isa_check import check_isa
from qiskit_runtime_server.worker.programs.primitives import ProgramOutput
from qiskit_runtime_server.worker.programs.served import for_served_backend


@dataclass
class DecodedProgram:
    """An executor job's ``params``: the schema model as received and the client's objects.

    ``program`` is a ``qiskit_ibm_runtime.QuantumProgram`` with finalized samplex items;
    ``options`` an ``ExecutorOptions``; ``model`` the validated ``ParamsModel`` (kept so the
    result can echo ``passthrough_data`` exactly as it arrived).
    """

    schema_version: str
    model: Any
    program: Any
    options: Any


@dataclass
class ItemRun:
    """One executed program item: its result arrays and when it ran (UTC)."""

    results: dict[str, np.ndarray]
    size: int
    ndim: int
    start: datetime
    stop: datetime


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    where = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg')}{more}" if where else f"{first.get('msg')}{more}"


def decode_executor_params(params: dict[str, Any]) -> DecodedProgram:
    """Validate and decode executor ``params`` exactly as the client encoded them.

    Samplex items are finalized here: samplex JSON deserialises unfinalized (docs/protocol.md P7).

    Raises:
        ProgramError: unknown or missing ``schema_version``, a body the schema rejects, corrupt
            QPY/tensors, or a samplex that cannot be rebuilt or finalized.
    """
    from qiskit_ibm_runtime.quantum_program.params_converters import QUANTUM_PROGRAM_PARAMS_CONVERTERS

    version = params.get("schema_version")
    if version not in EXECUTOR_SCHEMA_VERSIONS or version not in QUANTUM_PROGRAM_PARAMS_CONVERTERS:
        raise ProgramError(
            f"Unsupported executor schema_version {version!r}; this server accepts {list(EXECUTOR_SCHEMA_VERSIONS)}."
        )
    converter = QUANTUM_PROGRAM_PARAMS_CONVERTERS[version]
    try:
        model = converter.model.model_validate(params)
    except ValidationError as exc:
        raise ProgramError(f"Invalid executor params ({version}): {_first_error(exc)}") from None
    except Exception as exc:  # corrupt base64/zlib inside validators surfaces as other types
        raise ProgramError(f"Invalid executor params ({version}): {type(exc).__name__}: {exc}") from None
    try:
        program, options = converter.decoder(model)
    except Exception as exc:  # QPY, samplex JSON and tensor decoding raise many types
        raise ProgramError(
            f"The quantum program could not be decoded ({version}): {type(exc).__name__}: {exc}"
        ) from None
    for index, item in enumerate(program.items):
        samplex = getattr(item, "samplex", None)
        if samplex is not None and not samplex._finalized:
            try:
                samplex.finalize()
            except Exception as exc:
                raise ProgramError(f"Item {index}: the samplex could not be finalized: {exc}") from None
    return DecodedProgram(version, model, program, options)


@dataclass
class SimulationChoices:
    """What steers the simulation: seed and noise model (``None``: the backend's own noise)."""

    seed: int | None = None
    noise_model: Any = None


def _dig(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def simulation_choices(decoded: DecodedProgram) -> SimulationChoices:
    """The seed and noise model for this program.

    The executor options carry no simulator options (``ExecutorOptions.simulator`` is for local
    mode only and is not sent), so two places are read:

    * ``options.experimental.simulator``: ``{"seed_simulator": int, "noise_model": dict}``, a
      server extension for the raw ``Executor``; ``noise_model`` is ``NoiseModel.to_dict()``
      (``{}`` simulates without noise);
    * the seed the client-side Sampler/Estimator put in ``passthrough_data`` from their own
      ``options.simulator.seed_simulator``.

    Raises:
        ProgramError: a seed that is not a non-negative integer, or a noise model Aer rejects.
    """
    experimental = decoded.options.experimental or {}
    simulator = experimental.get("simulator") or {}
    if not isinstance(simulator, dict):
        raise ProgramError("options.experimental.simulator must be a mapping.")
    seed = simulator.get("seed_simulator")
    if seed is None:
        passthrough = decoded.program.passthrough_data
        seed = _dig(passthrough, "post_processor", "options", "simulator", "seed_simulator")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ProgramError(f"seed_simulator must be a non-negative integer, got {seed!r}.")
    noise_model = None
    if "noise_model" in simulator:
        from qiskit_aer.noise import NoiseModel

        raw = simulator["noise_model"]
        if not isinstance(raw, dict):
            raise ProgramError("options.experimental.simulator.noise_model must be NoiseModel.to_dict() output.")
        try:
            noise_model = NoiseModel.from_dict(raw) if raw else NoiseModel()
        except Exception as exc:
            raise ProgramError(f"options.experimental.simulator.noise_model is invalid: {exc}") from None
    return SimulationChoices(seed, noise_model)


def ignored_options(decoded: DecodedProgram) -> dict[str, Any]:
    """Execution options set away from their defaults that a simulator cannot honour."""
    execution = decoded.options.execution
    ignored: dict[str, Any] = {}
    if not execution.init_qubits:
        ignored["init_qubits"] = False
    if execution.rep_delay is not None:
        ignored["rep_delay"] = execution.rep_delay
    if execution.scheduler_timing:
        ignored["scheduler_timing"] = True
    if execution.stretch_values:
        ignored["stretch_values"] = True
    if any(getattr(item, "chunk_size", None) for item in decoded.program.items):
        ignored["chunk_size"] = "set on an item"
    return ignored


def _sample_item(
    index: int,
    item: Any,
    shots: int,
    backend: str,
    engine: SimulationEngine,
    choices: SimulationChoices,
    rng: np.random.Generator,
    circuit: Any = None,
) -> ItemRun:
    """Sample one item of a quantum program: its samplex (twirling, noise injection) drawn with
    ``rng``, then its circuit (``circuit`` when given, in place of ``item.circuit``) on the engine."""
    from qiskit.primitives.containers.bindings_array import BindingsArray
    from qiskit.primitives.containers.sampler_pub import SamplerPub
    from qiskit_ibm_runtime.fake_provider.executor.broadcast_sample import broadcast_sample

    start = datetime.now(UTC)
    shape = tuple(item.shape)
    instructions = len((item.circuit if circuit is None else circuit).data)
    engine.report.add_overhead(predict_item_overhead(math.prod(shape), instructions, hasattr(item, "samplex")))
    extra: dict[str, np.ndarray] = {}
    if hasattr(item, "samplex"):
        try:
            extra = broadcast_sample(SerialSamplex(item.samplex), item.samplex_arguments, shape, rng)
            values = extra.pop("parameter_values", None)
        except Exception as exc:
            raise ProgramError(f"Item {index}: the samplex could not be sampled: {type(exc).__name__}: {exc}") from None
    else:
        values = item.circuit_arguments
    circuit = item.circuit if circuit is None else circuit
    try:
        if circuit.num_parameters:
            bindings = BindingsArray({tuple(circuit.parameters): np.asarray(values, dtype=float)})
        else:
            # No parameters: the sweep shape alone still sets the result's leading axes.
            bindings = BindingsArray(shape=shape)
    except (ValueError, TypeError) as exc:
        raise ProgramError(f"Item {index}: the parameter values do not fit the circuit: {exc}") from None
    if bindings.shape != shape:
        raise ProgramError(f"Item {index}: parameter values have shape {bindings.shape}, the item {shape}.")
    try:
        pub = SamplerPub.coerce((circuit, bindings), shots)
    except (ValueError, TypeError) as exc:
        raise ProgramError(f"Item {index} is invalid: {exc}") from None
    bits = engine.sample_registers(backend, pub, shots=shots, seed=choices.seed, noise_model=choices.noise_model)
    stop = datetime.now(UTC)
    return ItemRun({**extra, **bits}, math.prod(shape), len(shape), start, stop)


class SerialSamplex:
    """A samplex whose ``sample`` runs its nodes one after another in the calling thread.

    ``Samplex.sample`` submits every node to a thread pool it starts on each call, and
    ``broadcast_sample`` calls it once per slice of a sweep: with many small slices (a 21-angle
    CHSH sweep: 85 calls, 1,350 nodes) the pools and the hand-offs cost more than the sampling
    (0.58 s of sampling become 0.43 s inline). :func:`install_inline_pool` makes samplomatic's
    pool run each node as it is submitted; the output is the same, since samplomatic spawns one
    child generator per node from ``rng`` whatever runs it (tests/unit/test_library_contracts.py).
    """

    def __init__(self, samplex: Any) -> None:
        self._samplex = samplex

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        install_inline_pool()
        return self._samplex.sample(*args, max_workers=1, **kwargs)


class InlinePool:
    """A ``ThreadPoolExecutor`` stand-in that runs each task when it is submitted."""

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers

    def __enter__(self) -> InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, as a pool does
            future.set_exception(exc)
        return future


def install_inline_pool() -> None:
    """Make ``samplomatic.samplex.samplex`` (0.21, bounded in pyproject.toml) sample on
    :class:`InlinePool` (idempotent)."""
    module = importlib.import_module("samplomatic.samplex.samplex")
    if getattr(module, "ThreadPoolExecutor", None) is not InlinePool:
        setattr(module, "ThreadPoolExecutor", InlinePool)  # noqa: B010 (the module's global, on purpose)


def pec_items(passthrough_data: Any) -> set[int]:
    """The indices of the items the client's estimator post-processes with PEC.

    The executor Estimator lists one entry per item in ``passthrough_data["qiskit_mitigation"]``,
    ``{"mitigation": "pec", "program_item_index": i, ...}`` for a PEC item.
    """
    entries = passthrough_data.get("qiskit_mitigation") if isinstance(passthrough_data, dict) else None
    if not isinstance(entries, list):
        return set()
    return {
        entry["program_item_index"]
        for entry in entries
        if isinstance(entry, dict)
        and entry.get("mitigation") == "pec"
        and isinstance(entry.get("program_item_index"), int)
    }


def add_empty_pauli_signs(runs: list[ItemRun], items: list[Any], passthrough_data: Any) -> None:
    """Give every PEC item whose samplex has no noise injection an empty ``pauli_signs``.

    A samplex outputs ``pauli_signs`` (``(*shape, number of noisy boxes)``, the parity of the
    negative-rate errors injected in each box) only when its circuit has at least one box with
    noise injection. A circuit without entangling layers (e.g. a mirror circuit whose gate pairs
    a device does not couple in that direction) has none, and the client's PEC post-processing
    refuses a result without the key ("Results must contain 'pauli_signs' in the data if PEC is
    used."). No box means no sign: the array with a last axis of length 0, every shot's sign +1.
    """
    for index in pec_items(passthrough_data):
        if 0 <= index < len(runs) and "pauli_signs" not in runs[index].results:
            runs[index].results["pauli_signs"] = np.zeros((*tuple(items[index].shape), 0), dtype=bool)


def encode_result(decoded: DecodedProgram, runs: list[ItemRun]) -> bytes:
    """The ``QuantumProgramResultModel`` JSON of the job's schema version.

    Tensors are ``CompressedTensorModel`` for v2.0 and ``TensorModel`` for v1.x. One
    ``chunk_timing`` span per item with its real start/stop, covering all of its elements.
    ``passthrough_data`` and ``semantic_role`` are echoed from the params model unchanged.

    Raises:
        ProgramError: a result array has a dtype the schema cannot carry.
    """
    from ibm_quantum_schemas.common import CompressedTensorModel, TensorModel

    module = importlib.import_module(
        f"ibm_quantum_schemas.executor.version_{decoded.schema_version[1:].replace('.', '_')}"
    )
    tensor = CompressedTensorModel if decoded.schema_version == "v2.0" else TensorModel
    quantum_program = decoded.model.quantum_program
    try:
        data = [
            module.QuantumProgramResultItemModel(
                results={name: tensor.from_numpy(np.ascontiguousarray(array)) for name, array in run.results.items()},
                metadata=module.ItemMetadataModel(),
            )
            for run in runs
        ]
    except ValueError as exc:
        raise ProgramError(f"A result could not be encoded: {exc}") from None
    spans = [
        module.ChunkSpan(
            start=run.start,
            stop=run.stop,
            parts=[
                module.ChunkPart(
                    idx_item=index,
                    size=run.size,
                    permutation=list(range(run.ndim)),
                    element_range=(0, run.size, 1),
                )
            ],
        )
        for index, run in enumerate(runs)
    ]
    result = module.QuantumProgramResultModel(
        data=data,
        metadata=module.MetadataModel(chunk_timing=spans),
        passthrough_data=quantum_program.passthrough_data,
        semantic_role=quantum_program.semantic_role,
    )
    return str(result.model_dump_json()).encode()


@for_served_backend
def run_executor(params: dict[str, Any], backend: str, engine: SimulationEngine, defaults: Defaults) -> ProgramOutput:
    """Run executor ``params`` (plain JSON, docs/protocol.md §5.3) on ``backend``.

    Every item runs with ``quantum_program.shots`` shots; the answer is the encoded
    ``QuantumProgramResultModel`` (bytes) in the params' schema version.

    Raises:
        ProgramError: the program cannot run here (see :func:`decode_executor_params`), a
            measurement level other than ``classified``, too many shots, a circuit wider than
            the backend, or a samplex that fails to sample.
    """
    decoded = decode_executor_params(params)
    program = decoded.program
    if program.meas_level != "classified":
        raise ProgramError(
            f"meas_level {program.meas_level!r} is not available on a simulator; only 'classified' is supported."
        )
    if program.shots > defaults.max_shots:
        raise ProgramError(f"At most {defaults.max_shots} shots are allowed, got {program.shots}.")
    width = engine.num_qubits(backend)
    for index, item in enumerate(program.items):
        if item.circuit.num_qubits > width:
            raise ProgramError(
                f"Item {index}: the circuit has {item.circuit.num_qubits} qubits, more than the "
                f"{width} qubits of the backend."
            )
        check_isa(item.circuit, backend, f"Item {index}")
    choices = simulation_choices(decoded)
    rng = np.random.default_rng(choices.seed)
    runs = [
        _sample_item(index, item, program.shots, backend, engine, choices, rng)
        for index, item in enumerate(program.items)
    ]
    add_empty_pauli_signs(runs, program.items, program.passthrough_data)
    ignored = ignored_options(decoded)
    warnings = [f"Options with no effect on a simulator were accepted and ignored: {ignored}"] if ignored else []
    return ProgramOutput(encode_result(decoded, runs), warnings, len(program.items))
