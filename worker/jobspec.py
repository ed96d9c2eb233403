"""What crosses the pipe between the worker and its simulation process (no qiskit imports)."""

from __future__ import annotations

from dataclasses import dataclass, field

from qiskit_runtime_server.shared.job_limits import JobLimits


@dataclass(frozen=True)
class Defaults:
    """Server-wide defaults applied when neither the PUB nor the options set a value."""

    shots: int = 4096
    precision: float = 0.015625
    max_shots: int = 10_000_000


@dataclass(frozen=True)
class ExecutionRequest:
    """One job to run: program, backend and the ``params`` text exactly as submitted."""

    job_id: str
    program_id: str
    backend: str
    params: bytes
    device: str = "CPU"
    defaults: Defaults = field(default_factory=Defaults)
    limits: JobLimits = field(default_factory=JobLimits)
    # Only decode and classify (shared/routing.py): the Outcome's device_class, nothing simulated.
    classify: bool = False
    # Seconds of simulation the job may be predicted to need (the lower of its max_execution_time
    # and QRS_MAX_JOB_SECONDS); a run predicted past it fails the job before it starts.
    max_seconds: float | None = None
    # IBM-like timing (docs/timing.md): also work out the job's QPU time (Outcome.qpu_seconds).
    timing: bool = False
    # Processes the job's estimator pieces may run in (QRS_PIECE_PROCESSES; 0: the simulation
    # process decides, worker/programs/piece_pool.py's default_processes).
    processes: int = 1


@dataclass(frozen=True)
class Outcome:
    """A finished run: the RuntimeEncoder result text and what the job log and metrics need."""

    result: bytes
    warnings: list[str]
    num_pubs: int
    quantum_seconds: float
    qiskit_version: str
    # Set by a classify request: "cpu" or "gpu" (worker/programs/device_class.py).
    device_class: str = ""
    # The engine's predicted simulation time (s) for the runs it made (worker/engines/methods.py).
    predicted_seconds: float | None = None
    # With ExecutionRequest.timing: the QPU time IBM would bill, without the per-job overhead
    # (worker/programs/qpu_time.py); None when the program is not modelled.
    qpu_seconds: float | None = None
    # Set by the worker's QPU-time hold (worker/tasks.py): the simulation time, when
    # quantum_seconds has become the QPU time.
    simulation_seconds: float | None = None
