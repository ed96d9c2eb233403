"""Child-process side: decode a job's params, run its program, encode the result.

Runs inside the runner's child process, which keeps qiskit, the fake backends and their noise
models loaded between jobs. ``execute`` is the only entry point; it takes and returns plain
picklable values.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import qiskit
from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder

from qiskit_runtime_server.shared.backends import default_catalog
from qiskit_runtime_server.shared.errors import ApiError
from qiskit_runtime_server.shared.job_limits import check_params
from qiskit_runtime_server.worker.engines.aer import (
    backend_noise_model,
    default_memory_limit_mb,
    engine_for,
    fake_backend,
)
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import ExecutionRequest, Outcome
from qiskit_runtime_server.worker.programs.device_class import job_device_class
from qiskit_runtime_server.worker.programs.executor import run_executor
from qiskit_runtime_server.worker.programs.noise_learner import run_noise_learner
from qiskit_runtime_server.worker.programs.piece_pool import default_processes
from qiskit_runtime_server.worker.programs.primitives import PROGRAMS as PRIMITIVES
from qiskit_runtime_server.worker.programs.qasm_input import circuits_from_qasm
from qiskit_runtime_server.worker.programs.qpu_time import job_qpu_seconds
from qiskit_runtime_server.worker.programs.served import served_backend

PROGRAMS = {**PRIMITIVES, "executor": run_executor, "noise-learner": run_noise_learner}
# Executor params are plain pydantic JSON, not RuntimeEncoder output (docs/protocol.md §5.3).
_PLAIN_JSON_PROGRAMS = frozenset({"executor"})


def decode_params(raw: bytes, *, plain: bool = False) -> dict[str, Any]:
    """``params`` with the client's own ``RuntimeDecoder`` (circuits, arrays, noise models...).

    ``plain`` reads ordinary JSON instead, for programs whose params carry no type tags.

    Raises:
        ProgramError: the text is not a JSON object the decoder understands.
    """
    try:
        params = json.loads(raw) if plain else json.loads(raw, cls=RuntimeDecoder)
    except Exception as exc:  # the decoder raises many types for corrupt QPY/ndarray payloads
        raise ProgramError(f"params could not be decoded: {type(exc).__name__}: {exc}") from None
    if not isinstance(params, dict):
        raise ProgramError("params must be a JSON object.")
    return params


_memory_limit_mb: int | None = None


def limit_memory(memory_limit_mb: int) -> None:
    """Cap this simulation process: ``memory_limit_mb`` MiB for a job (0: half the machine).

    The cap is given to every simulation (Aer's ``max_memory_mb`` and the pre-run estimate),
    and the process's data segment is limited to it plus what the process has mapped now
    (qiskit, caches) and 512 MiB of slack, so an allocation past it raises ``MemoryError`` (or
    Aer's own error) and fails the job instead of pushing the host into the OOM killer.
    """
    global _memory_limit_mb
    _memory_limit_mb = memory_limit_mb or default_memory_limit_mb()
    try:
        import resource

        # RLIMIT_DATA counts the data segment's virtual size (malloc arenas, thread stacks), so
        # the headroom is added to that, not to the resident size.
        with open("/proc/self/status") as status:
            data_kib = next(int(line.split()[1]) for line in status if line.startswith("VmData:"))
        cap = data_kib * 1024 + (_memory_limit_mb + 512) * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    except (ImportError, OSError, ValueError, StopIteration):  # not Linux: the Aer limit and estimate still apply
        logging.getLogger("qrs.worker").warning("could not set a memory limit on the simulation process")


def execute(request: ExecutionRequest) -> Outcome:
    """Run one job's program.

    Raises:
        ProgramError: the input cannot run; the message is the job's failure reason.
    """
    program = PROGRAMS.get(request.program_id)
    if program is None:
        raise ProgramError(f"Program {request.program_id} is not supported by this worker.")
    try:
        # Before RuntimeDecoder: it would inflate blobs and build operators without any bound.
        check_params(request.params, request.program_id, request.limits)
    except ApiError as exc:
        raise ProgramError(exc.message) from None
    params = decode_params(request.params, plain=request.program_id in _PLAIN_JSON_PROGRAMS)
    # OpenQASM 3 circuits become QuantumCircuits here, before anything reads the PUBs.
    circuits_from_qasm(request.program_id, params)
    if request.classify:
        device_class, why = job_device_class(request.program_id, params, request.defaults, _memory_limit_mb)
        return Outcome(b"", [why], 0, 0.0, qiskit.__version__, device_class=device_class)
    engine = engine_for(request.device, _memory_limit_mb)
    # Set-up is not usage: built here, before the clock starts, and cached for later jobs.
    prepare_backend(request.backend)
    processes = request.processes or default_processes(engine.memory_limit_mb)
    report = engine.begin_job(request.max_seconds, processes)
    start = time.perf_counter()
    output = program(params, request.backend, engine, request.defaults)
    elapsed = time.perf_counter() - start
    result = output.result
    text = result if isinstance(result, bytes) else json.dumps(result, cls=RuntimeEncoder).encode()
    # Dry runs on mock backends bill no usage, as on IBM.
    billed = elapsed if output.billable else 0.0
    return Outcome(
        text,
        output.warnings + report.log_lines(),
        output.num_pubs,
        billed,
        qiskit.__version__,
        predicted_seconds=round(report.predicted_seconds, 4),
        qpu_seconds=qpu_seconds(request, params) if request.timing and output.billable else None,
    )


def qpu_seconds(request: ExecutionRequest, params: dict[str, Any]) -> float | None:
    """The QPU time of the job's decoded ``params`` on its device (worker/programs/qpu_time.py)."""
    served = served_backend(request.backend)
    return job_qpu_seconds(
        request.program_id,
        params,
        served.configuration,
        fake_backend(served.simulated).target,
        default_shots=request.defaults.shots,
        default_precision=request.defaults.precision,
    )


def prepare_backend(name: str) -> None:
    """Build what a job on served backend ``name`` needs before it simulates: the backend
    catalogue, and the device's fake backend and noise model (about 2 s for a 127-qubit device).

    All are cached per process. ``execute`` calls this before it starts the job's clock, so the
    first job on a backend is billed for its simulation, not for this set-up. Mock names need no
    noise model.

    Raises:
        ProgramError: no backend of that name here.
    """
    served = served_backend(name)
    if not served.is_mock:
        backend_noise_model(served.simulated)


def warm_up(device: str = "CPU", backends: Sequence[str] = ()) -> None:
    """Work done once per simulation process before its first job.

    Builds the engine for ``device``, the backend catalogue and the noise models of ``backends``
    (``QRS_PRELOAD_BACKENDS``; any served name), so that the first job on those backends starts
    at once. Unknown names are logged and skipped.
    """
    engine_for(device, _memory_limit_mb)
    default_catalog()
    for name in backends:
        try:
            prepare_backend(name)
        except ProgramError as exc:
            logging.getLogger("qrs.worker").warning("not preloading %s: %s", name, exc)
