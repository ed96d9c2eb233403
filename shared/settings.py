"""Server configuration, read once from the environment.

Every field maps to one environment variable: ``REDIS_URL`` keeps its conventional name, all
others are prefixed with ``QRS_`` (``QRS_PORT``, ``QRS_DEFAULT_SHOTS``...). Values are converted
and checked by msgspec, so a wrong value fails at start-up with the variable's name in the message.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Annotated

import msgspec

from qiskit_runtime_server.shared.job_limits import JobLimits
from qiskit_runtime_server.shared.timing import TimingPolicy

DEFAULT_INSTANCE = "crn:v1:bluemix:public:quantum-computing:us-east:a/local:local-instance::"


def _env_name(field: str) -> str:
    return "REDIS_URL" if field == "redis_url" else f"QRS_{field.upper()}"


class Settings(msgspec.Struct, frozen=True, kw_only=True, rename=_env_name):
    """Frozen server settings.

    ``docs/configuration.md`` is generated from this class (``shared/settings_doc.py``): the comment
    right above a field is that variable's documentation, and a ``# == Title ==`` comment starts a
    section. Regenerate with ``python -m qiskit_runtime_server.shared.settings_doc --write``.
    """

    # == Server and client recipe ==
    # Listen address of the API (also ``--host``).
    host: str = "127.0.0.1"
    # Listen port of the API (also ``--port``).
    port: int = 8000
    # Redis to use. Unset: an embedded in-memory Redis (fakeredis) with the API and one worker in
    # one process (the all-in-one command only; ``api`` and ``worker`` need it set).
    redis_url: str | None = None
    # Base URL printed in the client recipe, the name clients reach the API under (set it behind
    # a proxy or on another host). Unset: ``http://{host}:{port}``.
    public_url: str | None = None
    # Proxy mode's ``CONNECT`` port for clients 0.40-0.48 (also ``--proxy-port``; docs/proxy-mode.md).
    # Unset: off.
    proxy_port: int | None = None
    # Where proxy mode keeps its CA (key mode 0600), leaf and ``ca-bundle.pem``. Unset:
    # ``$XDG_DATA_HOME/qiskit-runtime-server/proxy`` (``~/.local/share/...``).
    proxy_dir: str | None = None
    # arq queue of CPU-class work; GPU-class work uses ``{QRS_QUEUE_NAME}:gpu``. API and workers
    # must agree.
    queue_name: str = "qrs:queue"
    # Seconds an API request waits for an unreachable Redis before it answers 503
    # ``service_unavailable``; workers keep retrying each command for about 30 s instead.
    redis_deadline: float = 5.0
    # The instance CRN offered by instance discovery (open mode).
    instance: str = DEFAULT_INSTANCE

    # == Tokens, sessions, access control ==
    # HS256 secret for the tokens of ``/identity/token``. Unset: one random secret is kept in
    # Redis, so every API process of a deployment issues and accepts the same tokens.
    jwt_secret: str | None = None
    # Lifetime of an issued token, seconds.
    token_ttl: int = 3600
    # Default and largest session ``max_ttl``, seconds.
    session_max_ttl: int = 28_800
    # Seconds a dedicated session stays ``active`` after its last job before it turns
    # ``inactive`` (IBM's ``interactive_ttl``).
    session_interactive_ttl: int = 60
    # Simulation seconds each instance may use per calendar month (UTC). Unset: no limit. A
    # per-instance value in the access file takes precedence.
    usage_limit_seconds: float | None = None
    # ``key1=crn1,crn2;key2=crn3``: turns access control on (docs/jobs-sessions-access.md).
    # Unset, with no access file: open mode, any key for any instance.
    api_keys: str | None = None
    # Comma-separated operator keys: the dashboard shows them every instance (docs/dashboard.md);
    # with access control on, ``/workers`` and ``/metrics`` need one of them (docs/security.md).
    admin_keys: str | None = None
    # JSON file ``{"keys": {key: [crn, ...]}, "usage_limits": {crn: seconds}}``: turns access
    # control on; may be combined with ``QRS_API_KEYS``.
    access_file: str | None = None
    # Serve ``/workers`` and ``/metrics`` without an admin key even with access control on (a
    # Prometheus that scrapes without credentials). In open mode they are always open.
    open_metrics: bool = False
    # ``POST /admin/reset`` (empty the store) and ``POST /admin/import`` (load an export), for tests
    # and CI (docs/testing.md). ``false``: refused (403). ``true``: allowed to an admin key with
    # access control on, and in open mode only while ``QRS_HOST`` is a loopback address.
    # ``force``: in open mode on any address too.
    allow_reset: str = "false"
    # Host names the server answers (the ``Host`` header, port ignored), comma-separated; ``*``
    # allows any, ``*.example.org`` any name under example.org. Unset: ``localhost``,
    # ``127.0.0.1``, ``[::1]`` and ``QRS_HOST`` when it is one specific address. ``QRS_PUBLIC_URL``'s
    # host is always allowed, and so are IBM's hosts in proxy mode. Any other ``Host`` gets 400,
    # which protects a server on a laptop from DNS rebinding (docs/security.md).
    allowed_hosts: str | None = None
    # Seconds a finished job (record, params, result, logs) and a closed session are kept
    # (30 days); 0 keeps them forever (docs/deployment.md, Retention).
    job_retention: float = 2_592_000

    # == Request limits ==
    # Largest ``POST /jobs`` body, bytes (413 above).
    max_params_bytes: int = 64 * 1024 * 1024
    # Largest body of ``POST /identity/token``, ``PUT /jobs/{id}/tags``, ``POST`` and ``PATCH
    # /sessions``, bytes: 100 tags of 255 ASCII characters fit (413 above).
    max_small_body_bytes: int = 32 * 1024
    # Seconds a request body may take to arrive (408 and close above); also how long a body the
    # API answered without reading is discarded before the connection is closed.
    body_timeout: float = 60.0
    # Seconds from a request's first byte to the end of its headers (connection closed above).
    header_timeout: float = 10.0
    # Seconds an idle connection (fresh, or after a response) stays open.
    keep_alive: int = 5
    # Request line plus headers, bytes (431 above; 414 for the request line alone).
    max_header_bytes: int = 64 * 1024
    # Query string, bytes (414 above).
    max_query_bytes: int = 48 * 1024
    # Most open connections, and most running requests; past either a request gets 503 and the
    # connection is closed (0: no limit).
    max_connections: int = 1000

    # == Job limits and defaults ==
    # PUBs of a sampler or estimator job, items of an executor job (400 above).
    max_pubs: int = 10_000
    # Parameter values of a job, summed over its PUBs (400 above).
    max_parameter_values: int = 10_000_000
    # Parameter bindings x shots of a sampler job, summed over its PUBs; items x shots for
    # executor (400 above).
    max_job_shots: int = 10_000_000
    # Bytes a job's zlib+base64 arrays and circuits may inflate to, summed (413 above).
    max_decoded_bytes: int = 256 * 1024 * 1024
    # Shots of a PUB when neither the PUB nor the options set them.
    default_shots: int = 4096
    # Largest shots of one PUB: more is refused at ``POST /jobs`` (400); an executor job whose
    # ``QuantumProgram.shots`` is larger fails.
    max_shots: int = 10_000_000
    # Estimator precision when neither the PUB nor the options set it.
    default_precision: float = 0.015625
    # Seconds a job may run when it sets no ``max_execution_time``, and the upper bound; a job
    # past it ends ``Cancelled`` with reason code 1305.
    max_execution_time: int = 10_800
    # Most seconds of simulation a job may be predicted to need, from the methods and sizes it
    # runs (docs/simulation.md); a job predicted past this or its ``max_execution_time`` fails at
    # once with the prediction and the method named, instead of holding a worker.
    max_job_seconds: float = 600.0
    # Age (seconds since submission) up to which a status request for an unfinished job waits for
    # it to finish: the client's first poll comes right after submission, so a job shorter than
    # this is seen finished on it; requests for older jobs are answered at once (0: never wait).
    status_hold: float = 1.0

    # == Workers ==
    # Worker name in job records and logs. Empty: ``{hostname}-{pid}-{6 hex}``, the random part
    # new at every process start (a container restart repeats the pid).
    worker_id: str = ""
    # Simulation device of a worker, ``CPU`` or ``GPU``.
    device: str = "CPU"
    # Device-class queue a worker consumes, ``cpu`` or ``gpu``. Empty: follows ``QRS_DEVICE``.
    # ``gpu`` on a CPU worker stands in for a GPU worker (tests, or a CPU pool for wide jobs).
    queue_class: str = ""
    # Comma-separated backends whose noise models a worker builds at start-up, e.g.
    # ``fake_sherbrooke,fake_manila``, so the first job on them is fast too (~2 s saved on 127 qubits).
    preload_backends: str = ""
    # Extra backend names, ``alias=backend,alias2=backend2`` (backend: any served name, e.g.
    # ``fake_manila`` or ``ibm_sherbrooke``). Give API and workers the same value: workers map a
    # job's backend name with it.
    backend_aliases: str = ""
    # MiB one job's simulation may use: Aer's ``max_memory_mb``, the pre-run estimate (a job that
    # cannot fit fails at once) and the simulation process's data-size limit. 0: half of the
    # machine's memory, which the all-in-one server divides among its workers (docs/workers.md).
    job_memory_limit: int = 0
    # Workers of the all-in-one server (no subcommand), each with its own simulation process, so
    # a Batch's jobs run side by side. 0: one per usable CPU core; fewer when their jobs' memory
    # would not fit (docs/workers.md). The ``worker`` subcommand is always one worker.
    workers: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Processes one estimator job's light-cone pieces run in side by side (mitigated EstimatorV2
    # jobs split by light cones, e.g. 100-node QAOA), forked from the simulation process and
    # kept for later jobs (docs/simulation.md). 0: one per CPU core the worker may use, at most
    # one per GiB of QRS_JOB_MEMORY_LIMIT (a helper may hold about 0.7 GiB); 1: none.
    piece_processes: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Seconds between a worker's fallback queue polls; idle workers are woken by a pub/sub
    # doorbell when a job is queued.
    poll_delay: float = 0.05
    # Seconds a worker's claim on a job lasts without renewal (renewed every lease/3); also the
    # heartbeat expiry. Use the same value on every host.
    job_lease: float = 15.0
    # Runs of a job interrupted by infrastructure faults (lost workers) before it fails.
    max_attempts: int = 3
    # Seconds a worker lets its running job finish after SIGTERM before handing it back.
    shutdown_grace: float = 10.0

    # == IBM-like timing ==
    # ``ibm``: jobs wait in ``Queued`` for a drawn queue time, then stay ``Running`` for at least
    # the QPU time IBM would bill, which is also their usage (docs/timing.md); ``off``: jobs start
    # as soon as a worker is free and finish when simulated. The API decides per job: workers
    # need not set it.
    timing: str = "off"
    # Per-backend timing, ``name=ibm,name2=off`` (any served name of the device), over
    # ``QRS_TIMING``; e.g. ``fake_sherbrooke=ibm`` times only that device.
    timing_backends: str = ""
    # Queue time of a timed job, seconds: ``fixed:S``, ``uniform:A,B`` or ``exp:MEAN``
    # (exponential).
    queue_time: str = "exp:5"
    # Seed of the queue-time draws (one sequence per API process). Unset: unpredictable.
    timing_seed: int | None = None
    # Seconds of QPU time added to every timed job, IBM's per-job overhead (loading the
    # instruments, compiling the pulses).
    qpu_overhead: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    # == Fault injection ==
    # ``/admin/faults`` (add, list and remove fault rules, docs/faults.md), for tests and CI.
    # ``false``: adding and removing rules is refused (403). ``true``: allowed to an admin key with
    # access control on, and in open mode only while ``QRS_HOST`` is a loopback address. ``force``:
    # in open mode on any address too. Not ``false`` also makes this process apply the stored
    # rules: give API and workers the same value.
    allow_faults: str = "false"
    # Fault rules installed at start-up (JSON: one rule, a list, or ``{"faults": [...]}``; docs/faults.md),
    # e.g. ``[{"effect": "http_error", "route": "/jobs", "method": "POST", "status_code": 503, "count": 2}]``.
    # Set: this process applies the stored rules, whatever ``QRS_ALLOW_FAULTS`` says.
    faults: str | None = None
    # JSON file of fault rules installed at start-up, in the form ``QRS_FAULTS`` takes (both may be set).
    faults_file: str | None = None

    # == Logging ==
    # Log level.
    log_level: str = "INFO"
    # ``text``, or ``json`` for one JSON object per line with ``job_id``/``worker_id`` fields.
    log_format: str = "text"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def job_limits(self) -> JobLimits:
        """The per-job bounds of ``QRS_MAX_PUBS``, ``QRS_MAX_PARAMETER_VALUES``, ``QRS_MAX_JOB_SHOTS``..."""
        return JobLimits(
            max_pubs=self.max_pubs,
            max_parameter_values=self.max_parameter_values,
            max_job_shots=self.max_job_shots,
            max_decoded_bytes=self.max_decoded_bytes,
            default_shots=self.default_shots,
        )

    def __post_init__(self) -> None:
        self.timing_policy()  # a malformed timing setting fails at start-up, with its value

    def timing_policy(self) -> TimingPolicy:
        """``QRS_TIMING``, ``QRS_TIMING_BACKENDS``, ``QRS_QUEUE_TIME``... as one policy (shared/timing.py).

        Raises:
            ValueError: a malformed value.
        """
        return TimingPolicy(self.timing, self.timing_backends, self.queue_time, self.qpu_overhead, self.timing_seed)

    @property
    def preload(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.preload_backends.split(",") if name.strip())

    @property
    def effective_worker_id(self) -> str:
        """``QRS_WORKER_ID``, else ``{hostname}-{pid}-{6 hex digits}``, fixed for this process.

        The random part: in a container the pid repeats on every start (``init: true`` gives
        the worker pid 7), so hostname and pid alone let a restarted worker take over the
        registry entry (and look like the owner of the jobs) of the one that died.
        """
        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}-{_process_suffix()}"


_SUFFIXES: dict[int, str] = {}


def _process_suffix() -> str:
    """Random hex digits drawn once per process (a forked child draws its own: keyed by pid)."""
    return _SUFFIXES.setdefault(os.getpid(), secrets.token_hex(3))


def load_settings(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``) plus explicit overrides.

    Raises:
        msgspec.ValidationError: a variable has a value of the wrong type; the message names it.
    """
    env = dict(os.environ if environ is None else environ)
    known = {_env_name(f) for f in Settings.__struct_fields__}
    data: dict[str, object] = {k: v for k, v in env.items() if k in known and v != ""}
    data.update({_env_name(k): v for k, v in overrides.items() if v is not None})
    return msgspec.convert(data, Settings, strict=False)
