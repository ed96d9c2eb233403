"""Clean state and JSON-lines snapshots of the store: ``/admin/reset``, ``/admin/export``, ``/admin/import``.

**Reset** (:func:`reset`) empties what users and the dashboard see, and keeps what a running
deployment needs to go on serving:

* deleted: every job (record, params, result, logs, indexes), every session, the usage
  counters, the dashboard's and ``/metrics``' job counters, and the queue: the arq entries of
  every queued job. A job running at that moment loses its record, so its worker stops it
  within a second (``worker/cancellation.py``) and writes nothing back.
* kept: the token secret ``qrs:jwt-secret`` (tokens already issued stay valid), the worker
  registry (``qrs:workers``, ``qrs:worker:{id}``), the orphan sweep's lock, arq's in-progress
  keys of running jobs (their worker removes them) and arq's health-check keys.

A reset is not atomic with the requests around it: a job submitted while it runs may be kept
or half deleted. Reset between tests, while no client is using the server.

**Export** (:func:`export_lines`) writes one JSON object per line: a header, then ``job``
lines (record, params, result, logs), ``session`` lines and ``usage`` lines. **Import**
(:func:`import_lines`) reads them back: a job or session whose id already exists is skipped;
a job that was not final is queued again (as ``Queued``), so it runs on this deployment; the
dashboard's counters are rebuilt from the records; usage counters are set to the exported
values. Finished jobs and closed sessions get the retention (``QRS_JOB_RETENTION``) anew from
the time of the import.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import msgspec
from arq.constants import job_key_prefix, result_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from qiskit_runtime_server.shared import job_index, keys, stats
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import queue_commands
from qiskit_runtime_server.shared.sessions import SessionRecord, sessions_index
from qiskit_runtime_server.shared.store import USAGE_TTL
from qiskit_runtime_server.shared.transactions import transact

FORMAT = "qiskit-runtime-server/export"
VERSION = 1
SWEEP_LOCK = f"{keys.PREFIX}sweep-lock"
# Keys a reset keeps: what running API processes and workers rely on (module docstring).
KEPT_KEYS = frozenset({keys.JWT_SECRET, keys.WORKERS, SWEEP_LOCK})
KEPT_PREFIXES = (f"{keys.PREFIX}worker:",)
_SCAN_COUNT = 1000
_BATCH = 100

_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(JobRecord).decode
_decode_session = msgspec.json.Decoder(SessionRecord).decode


class SnapshotError(ValueError):
    """A line of an import that is not one of the export's lines (a client mistake)."""


class JobLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One job of an export: ``params``/``result`` as text, or ``*_b64`` when not UTF-8."""

    record: JobRecord
    params: str | None = None
    params_b64: str | None = None
    result: str | None = None
    result_b64: str | None = None
    logs: list[str] = msgspec.field(default_factory=list)


class SessionLine(msgspec.Struct, kw_only=True):
    record: SessionRecord


class UsageLine(msgspec.Struct, kw_only=True):
    instance: str
    period: str
    seconds: float


class HeaderLine(msgspec.Struct, kw_only=True):
    format: str
    version: int
    exported: float | None = None


_LINE_TYPES: dict[str, type[msgspec.Struct]] = {
    "header": HeaderLine,
    "job": JobLine,
    "session": SessionLine,
    "usage": UsageLine,
}


@dataclass
class ImportReport:
    """What an import wrote (``jobs``, ``sessions``, ``usage``) and the ids it skipped (already there)."""

    jobs: int = 0
    sessions: int = 0
    usage: int = 0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"jobs": self.jobs, "sessions": self.sessions, "usage": self.usage, "skipped": self.skipped}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _scan(redis: Redis, pattern: str) -> AsyncIterator[str]:
    async for key in redis.scan_iter(match=pattern, count=_SCAN_COUNT):
        yield _text(key)


def queue_names(queue_name: str) -> tuple[str, str]:
    """The CPU- and GPU-class arq queues of ``QRS_QUEUE_NAME`` (``shared/routing.py``)."""
    from qiskit_runtime_server.shared.routing import GPU, class_queue

    return queue_name, class_queue(queue_name, GPU)


def _kept(key: str, queues: Iterable[str]) -> bool:
    if key in KEPT_KEYS or key.startswith(KEPT_PREFIXES):
        return True
    return any(key.startswith(f"{queue}:health-check") for queue in queues)


async def reset(redis: Redis, queue_name: str) -> dict[str, int]:
    """Empty the store (module docstring); returns how many ``jobs`` and ``keys`` were deleted."""
    queues = queue_names(queue_name)
    queued: set[str] = set()
    for queue in queues:
        queued.update(_text(m) for m in await redis.zrange(queue, 0, -1))
    jobs = 0
    async for key in _scan(redis, f"{keys.PREFIX}job:*"):
        rest = key[len(keys.PREFIX) + len("job:") :]
        if ":" not in rest:
            jobs += 1
            queued.add(unquote(rest))
    deleted = 0
    ids = sorted(queued)
    for start in range(0, len(ids), _BATCH):
        arq_keys = [
            prefix + job_id
            for job_id in ids[start : start + _BATCH]
            for prefix in (job_key_prefix, retry_key_prefix, result_key_prefix)
        ]
        deleted += int(await redis.delete(*arq_keys))
    batch: list[str] = list(queues)
    async for key in _scan(redis, f"{keys.PREFIX}*"):
        if not _kept(key, queues):
            batch.append(key)
        if len(batch) >= _SCAN_COUNT:
            deleted += int(await redis.delete(*batch))
            batch = []
    if batch:
        deleted += int(await redis.delete(*batch))
    return {"jobs": jobs, "keys": deleted}


def _payload(name: str, raw: bytes | None) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(raw).decode("ascii")}


def _line(kind: str, body: msgspec.Struct | dict[str, Any]) -> bytes:
    data = msgspec.to_builtins(body)
    return _encode({"kind": kind, **data}) + b"\n"


async def export_lines(redis: Redis) -> AsyncIterator[bytes]:
    """The store as JSON lines (module docstring), read in batches with ``SCAN``."""
    yield _line("header", HeaderLine(format=FORMAT, version=VERSION, exported=time.time()))
    job_ids = [
        unquote(rest)
        async for key in _scan(redis, f"{keys.PREFIX}job:*")
        if ":" not in (rest := key[len(keys.PREFIX) + len("job:") :])
    ]
    for start in range(0, len(job_ids), _BATCH):
        chunk = job_ids[start : start + _BATCH]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.get(keys.job(job_id))
                pipe.get(keys.job_params(job_id))
                pipe.get(keys.job_result(job_id))
                pipe.lrange(keys.job_logs(job_id), 0, -1)
            replies = await pipe.execute()
        for i in range(len(chunk)):
            raw, params, result, logs = replies[4 * i : 4 * i + 4]
            if raw is None:
                continue  # expired or deleted since the scan
            body: dict[str, Any] = {"record": msgspec.to_builtins(_decode_record(raw))}
            body.update(_payload("params", params))
            body.update(_payload("result", result))
            if logs:
                body["logs"] = [_text(line) for line in logs]
            yield _line("job", body)
    async for key in _scan(redis, f"{keys.PREFIX}session:*"):
        raw = await redis.get(key)
        if raw is not None:
            yield _line("session", SessionLine(record=_decode_session(raw)))
    async for key in _scan(redis, f"{keys.PREFIX}usage:*"):
        instance, _, period = key[len(keys.PREFIX) + len("usage:") :].rpartition(":")
        value = await redis.get(key)
        if value is not None and instance:
            yield _line("usage", UsageLine(instance=unquote(instance), period=period, seconds=float(value)))


def _binary(line: JobLine, name: str) -> bytes | None:
    text, encoded = getattr(line, name), getattr(line, f"{name}_b64")
    if text is not None:
        return str(text).encode("utf-8")
    if encoded is not None:
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise SnapshotError(f"job {line.record.id}: {name}_b64 is not base64") from exc
    return None


def parse_line(text: bytes, number: int) -> msgspec.Struct:
    """One line of an export as its typed struct.

    Raises:
        SnapshotError: not JSON, no known ``kind``, a field of the wrong type, or a foreign header.
    """
    try:
        data = msgspec.json.decode(text)
        if not isinstance(data, dict):
            raise SnapshotError(f"line {number}: not a JSON object")
        kind = data.pop("kind", None)
        if kind not in _LINE_TYPES:
            raise SnapshotError(f"line {number}: unknown kind {kind!r} (one of {', '.join(_LINE_TYPES)})")
        parsed = msgspec.convert(data, _LINE_TYPES[kind])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(f"line {number}: {exc}") from exc
    if isinstance(parsed, HeaderLine) and (parsed.format != FORMAT or parsed.version > VERSION):
        raise SnapshotError(f"line {number}: not an export of this server ({parsed.format} version {parsed.version})")
    return parsed


async def import_lines(redis: Redis, lines: AsyncIterator[bytes], *, queue_name: str, retention: float) -> ImportReport:
    """Write the lines of an export into the store (module docstring).

    Raises:
        SnapshotError: a malformed line; the lines before it are imported.
    """
    report = ImportReport()
    serializer = getattr(redis, "job_serializer", None)
    number = 0
    async for text in lines:
        number += 1
        if not text.strip():
            continue
        parsed = parse_line(text, number)
        if isinstance(parsed, JobLine):
            if await _import_job(redis, parsed, queue_name, serializer, retention):
                report.jobs += 1
            else:
                report.skipped.append(parsed.record.id)
        elif isinstance(parsed, SessionLine):
            if await _import_session(redis, parsed.record, retention):
                report.sessions += 1
            else:
                report.skipped.append(parsed.record.id)
        elif isinstance(parsed, UsageLine):
            usage = keys.usage(parsed.instance, parsed.period)
            await redis.set(usage, repr(parsed.seconds), ex=USAGE_TTL)
            report.usage += 1
    return report


async def _import_job(redis: Redis, line: JobLine, queue_name: str, serializer: Any, retention: float) -> bool:
    record = line.record
    if not record.status.final:
        # Its worker is not here: the job waits in the queue again.
        record = msgspec.structs.replace(record, status=JobStatus.QUEUED, worker_id=None)
    params, result = _binary(line, "params"), _binary(line, "result")

    def write(pipe: Pipeline, existing: bytes | None) -> bool:
        if existing is not None:
            return False
        pipe.set(keys.job(record.id), _encode(record))
        if params is not None:
            pipe.set(keys.job_params(record.id), params)
        if result is not None:
            pipe.set(keys.job_result(record.id), result)
        if line.logs:
            pipe.rpush(keys.job_logs(record.id), *line.logs)
        job_index.add_commands(pipe, record)
        # The dashboard's counters as if the job had been created, then reached its state now.
        created = msgspec.structs.replace(record, status=JobStatus.QUEUED)
        stats.record_created(pipe, created)
        if record.status.final:
            stats.record_change(pipe, created, record, now=record.finished or record.created)
            stats.record_final(pipe, record)
            if retention > 0:
                ttl = max(1, int(retention))
                for key in (keys.job(record.id), keys.job_params(record.id), keys.job_result(record.id)):
                    pipe.expire(key, ttl)
                pipe.expire(keys.job_logs(record.id), ttl)
        else:
            pipe.sadd(keys.pending(record.backend), record.id)
            queue_commands(pipe, queue_name, record.id, serializer)
        return True

    return await transact(redis, keys.job(record.id), write)


async def _import_session(redis: Redis, record: SessionRecord, retention: float) -> bool:
    key = keys.session(record.id)

    def write(pipe: Pipeline, existing: bytes | None) -> bool:
        if existing is not None:
            return False
        if record.closed_at is not None and retention > 0:
            pipe.set(key, _encode(record), ex=max(1, int(retention)))
        else:
            pipe.set(key, _encode(record))
        if record.closed_at is None:
            pipe.zadd(keys.OPEN_SESSIONS, {record.id: record.created + 2 * record.max_ttl})
        index_keys = [sessions_index(keys.dash_scope(record.instance)), sessions_index(keys.ALL_SCOPE)]
        for index in index_keys:
            pipe.zadd(index, {record.id: record.created})
        pipe.zadd(keys.INDEXES, dict.fromkeys(index_keys, record.created), nx=True)
        return True

    return await transact(redis, key, write)
