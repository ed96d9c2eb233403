"""Server configuration, read once from the environment.

Every field maps to one environment variable: ``REDIS_URL`` keeps its conventional name, all
others are prefixed with ``QRS_`` (``QRS_PORT``, ``QRS_DEFAULT_SHOTS``...). Values are converted
and checked by msgspec, so a wrong value fails at start-up with the variable's name in the message.
"""

from __future__ import annotations

import os
import secrets
import socket

import msgspec

from qiskit_runtime_server.shared.job_limits import JobLimits

DEFAULT_INSTANCE = "crn:v1:bluemix:public:quantum-computing:us-east:a/local:local-instance::"


def _env_name(field: str) -> str:
    return "REDIS_URL" if field == "redis_url" else f"QRS_{field.upper()}"


class Settings(msgspec.Struct, frozen=True, kw_only=True, rename=_env_name):
    """Frozen server settings; see the README's configuration table for each variable."""

    host: str = "127.0.0.1"
    port: int = 8000
    # None selects the embedded in-memory Redis (fakeredis), API and worker in one process.
    redis_url: str | None = None
    # Base URL printed in the client recipe; defaults to http://{host}:{port}.
    public_url: str | None = None
    # Proxy mode (api/proxy/): a CONNECT proxy for IBM's hosts on this port, for clients 0.40-0.48.
    # Unset: off. QRS_PROXY_DIR keeps its CA (default $XDG_DATA_HOME/qiskit-runtime-server/proxy).
    proxy_port: int | None = None
    proxy_dir: str | None = None
    queue_name: str = "qrs:queue"
    # Seconds an API request waits for an unreachable Redis before it answers 503
    # service_unavailable (api/app.py); workers keep riding out outages for ~30 s per command.
    redis_deadline: float = 5.0
    instance: str = DEFAULT_INSTANCE
    # Secret for the HS256 tokens of /identity/token. Unset: one random secret is kept in Redis
    # so that every API process of a deployment issues and accepts the same tokens.
    jwt_secret: str | None = None
    token_ttl: int = 3600
    # Sessions: upper bound and default of max_ttl, and how long a dedicated session stays active
    # after its last job before it turns inactive (IBM's interactive_ttl), all in seconds.
    session_max_ttl: int = 28_800
    session_interactive_ttl: int = 60
    # Seconds of simulation each instance may use per calendar month; unset means no limit.
    # A per-instance value in the access file takes precedence.
    usage_limit_seconds: float | None = None
    # Access control (README "Jobs, sessions and access control"): unset means open mode (any key, any instance).
    # QRS_API_KEYS: "key1=crn1,crn2;key2=crn3"; QRS_ACCESS_FILE: a JSON file (both may be set).
    api_keys: str | None = None
    # Operator keys (comma-separated): the dashboard shows them every instance (README "Dashboard").
    # With access control on, /workers and /metrics also need one of them (docs/security.md).
    admin_keys: str | None = None
    access_file: str | None = None
    # Serve /workers and /metrics without an admin key even with access control on (a Prometheus
    # that scrapes without credentials). In open mode they are always open.
    open_metrics: bool = False
    # Host names the server answers (the Host header, port ignored), comma-separated; "*" allows
    # any, "*.example.org" any name under example.org. Unset: localhost, 127.0.0.1, [::1] and
    # QRS_HOST when it is one specific address. QRS_PUBLIC_URL's host is always allowed, and so
    # are IBM's hosts in proxy mode. Any other Host is answered 400: it protects a server on a
    # laptop from DNS rebinding (docs/security.md).
    allowed_hosts: str | None = None
    # Seconds a finished job (record, params, result, logs) and a closed session are kept;
    # 0 keeps them forever. Default: 30 days.
    job_retention: float = 2_592_000
    max_params_bytes: int = 64 * 1024 * 1024
    # Largest body of the small routes (POST /identity/token, PUT /jobs/{id}/tags, POST and PATCH
    # /sessions): 100 tags of 255 ASCII characters fit; 413 above.
    max_small_body_bytes: int = 32 * 1024
    # HTTP limits (README "Limits"). Seconds a request body may take to arrive (408 and close
    # above; also how long an unread body is discarded after the answer before the connection
    # is closed), seconds from a request's first byte to the end of its headers (close above),
    # seconds an idle keep-alive or fresh connection stays open.
    body_timeout: float = 60.0
    header_timeout: float = 10.0
    keep_alive: int = 5
    # Request line plus headers (431 above; the request line alone: 414) and query string (414).
    max_header_bytes: int = 64 * 1024
    max_query_bytes: int = 48 * 1024
    # Most open connections, and most running requests: past either, 503 (uvicorn's limit_concurrency check).
    max_connections: int = 1000
    # Per-job bounds checked before params are decoded (shared/job_limits.py; 400/413 at POST /jobs).
    max_pubs: int = 10_000
    max_parameter_values: int = 10_000_000
    max_job_shots: int = 10_000_000
    max_decoded_bytes: int = 256 * 1024 * 1024
    default_shots: int = 4096
    max_shots: int = 10_000_000
    default_precision: float = 0.015625
    # Upper bound on a job's running time in seconds, and the value used when a job sets no cost.
    max_execution_time: int = 10_800
    # Seconds a status request for an unfinished job may wait for it to finish before answering:
    # the client's first poll comes right after submission, so a small job's result is ready
    # on it instead of 0.5 s later. 0 answers at once.
    status_hold: float = 0.25
    # Worker side.
    worker_id: str = ""
    device: str = "CPU"
    # Which device-class queue a worker consumes (shared/routing.py): "" follows device;
    # "gpu" on a CPU worker stands in for a GPU worker (tests, or a CPU pool for wide jobs).
    queue_class: str = ""
    # Comma-separated backends whose noise models a worker builds at start-up, e.g.
    # "fake_sherbrooke,fake_manila": the first job on them then skips that (~2 s on 127 qubits).
    preload_backends: str = ""
    # Extra backend names, "alias=backend,alias2=backend2" (backend: any served name). API and
    # workers must be given the same value: workers map a job's backend name with it.
    backend_aliases: str = ""
    # MiB one job's simulation may use (Aer's max_memory_mb, the pre-run estimate and the
    # simulation process's data-size limit); 0 means half of the machine's memory.
    job_memory_limit: int = 0
    # Fallback queue poll; workers are woken by a pub/sub doorbell when a job is queued.
    poll_delay: float = 0.05
    job_lease: float = 15.0
    max_attempts: int = 3
    # Seconds a worker lets its running job finish after SIGTERM before handing it back.
    shutdown_grace: float = 10.0
    log_level: str = "INFO"
    # "text" or "json" (one JSON object per line, with job_id/worker_id fields).
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
