"""Logging set-up: plain text, or one JSON object per line (``QRS_LOG_FORMAT=json``).

JSON lines carry ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and, when known,
``job_id`` and ``worker_id``, so a log collector can follow one job across the API and the
workers. The job id comes from ``extra={"job_id": ...}`` or from :data:`job_id_var`, which the
worker sets when a job starts (tasks created inside the job inherit it); the worker id from
:data:`worker_id_var` where one process runs several workers, else the process's own.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time

job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("qrs_job_id", default=None)
# The worker a line comes from when one process runs several (the all-in-one server's
# QRS_WORKERS, worker/embedded.py): set in each worker's task, inherited by its job tasks.
worker_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("qrs_worker_id", default=None)

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is emitted.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Adds ``job_id`` (from :data:`job_id_var`) and ``worker_id`` to every record."""

    def __init__(self, worker_id: str | None = None) -> None:
        super().__init__()
        self.worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        if getattr(record, "worker_id", None) is None:
            worker_id = worker_id_var.get() or self.worker_id
            if worker_id:
                record.worker_id = worker_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; fields with a ``None`` value are left out."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text", worker_id: str | None = None) -> None:
    """Configure the root logger once for the process.

    Raises:
        ValueError: ``fmt`` is neither ``text`` nor ``json``.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"QRS_LOG_FORMAT must be 'text' or 'json', not {fmt!r}")
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter(worker_id))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
