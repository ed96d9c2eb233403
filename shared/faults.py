"""Fault injection: rules that make jobs fail, backends go offline, routes answer errors or slowly,
and sessions expire early, for testing a client's error and retry paths (docs/faults.md).

A rule names one ``effect`` and may narrow where it applies with any of ``backend``, ``program``,
``instance``, ``session``, ``route`` and ``method`` (each that is set must match; unset matches
anything; ``backend``, ``instance``, ``session`` and ``route`` are ``fnmatch`` patterns, ``method`` an
HTTP method). Which fields an effect can use:

effect           where it acts                                       match fields
job_failure      the worker, when it starts the job: ``Failed``      backend, program, instance
job_cancel       the worker, when it starts the job: ``Cancelled``   backend, program, instance
backend_status   ``GET /backends/{name}/status``: ``state: false``   backend, instance
                 (and ``GET /backends``: the entry is ``offline``)
http_error       any route: 429, 500, 502, 503 or 504 in IBM's       route, method, instance, backend
                 error format (``backend``: the path's ``{name}``)
latency          any route: ``latency_ms`` added before it runs      route, method, instance, backend
session_expiry   a read of the session or a job submitted to it:     backend, instance, session
                 the session closes, as on its ``max_ttl``

Each rule fires with its ``probability`` (1 by default) and at most ``count`` times (unlimited by
default). Rules live in Redis (``qrs:faults``, ``qrs:faults:left``, ``qrs:faults:fired``:
``shared/keys.py``), so every API process and worker of a deployment sees the same ones and
shares their counts.

A process consults them only when fault injection is on for it (:func:`enabled`): otherwise no
request or job pays a Redis command for them.
"""

from __future__ import annotations

import fnmatch
import json
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.models import REASON_EXECUTION_ERROR
from qiskit_runtime_server.shared.settings import Settings

RULES, LEFT, FIRED = keys.FAULTS, keys.FAULTS_LEFT, keys.FAULTS_FIRED

JOB_FAILURE = "job_failure"
JOB_CANCEL = "job_cancel"
BACKEND_STATUS = "backend_status"
HTTP_ERROR = "http_error"
LATENCY = "latency"
SESSION_EXPIRY = "session_expiry"

JOB_EFFECTS = frozenset({JOB_FAILURE, JOB_CANCEL})
HTTP_EFFECTS = frozenset({HTTP_ERROR, LATENCY})

# The fields each effect may match on; a rule setting another one is refused.
MATCH_FIELDS: dict[str, frozenset[str]] = {
    JOB_FAILURE: frozenset({"backend", "program", "instance"}),
    JOB_CANCEL: frozenset({"backend", "program", "instance"}),
    BACKEND_STATUS: frozenset({"backend", "instance"}),
    HTTP_ERROR: frozenset({"route", "method", "instance", "backend"}),
    LATENCY: frozenset({"route", "method", "instance", "backend"}),
    SESSION_EXPIRY: frozenset({"backend", "instance", "session"}),
}
_ALL_MATCH_FIELDS = ("backend", "program", "instance", "session", "route", "method")
# The effect parameters each effect takes.
PARAMETERS: dict[str, frozenset[str]] = {
    JOB_FAILURE: frozenset({"reason_code", "message"}),
    JOB_CANCEL: frozenset({"reason_code", "message"}),
    BACKEND_STATUS: frozenset({"status", "message"}),
    HTTP_ERROR: frozenset({"status_code", "retry_after", "message"}),
    LATENCY: frozenset({"latency_ms"}),
    SESSION_EXPIRY: frozenset(),
}
_ALL_PARAMETERS = ("reason_code", "message", "status", "status_code", "retry_after", "latency_ms")

# http_error: the statuses offered, with IBM's error code and a default message for each.
HTTP_ERRORS: dict[int, tuple[str, str]] = {
    429: ("too_many_requests", "Too many requests; slow down and retry later."),
    500: ("internal_error", "Internal server error."),
    502: ("bad_gateway", "Bad gateway: an upstream service did not answer."),
    503: ("service_unavailable", "The service is temporarily unavailable; retry shortly."),
    504: ("gateway_timeout", "Gateway timeout: an upstream service took too long."),
}
# backend_status: IBM's ``status`` of a backend that is not operational.
BACKEND_STATES = ("maintenance", "internal")
DEFAULT_JOB_FAILURE = "The job could not be completed on the backend."
DEFAULT_JOB_CANCEL = "The job was cancelled by the system."
MAX_LATENCY_MS = 600_000


class FaultRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One fault rule (``POST /admin/faults``, ``QRS_FAULTS``, ``QRS_FAULTS_FILE``); docs/faults.md."""

    # job_failure, job_cancel, backend_status, http_error, latency or session_expiry.
    effect: str
    # Given by the server when absent; a configured rule may name its own.
    id: str = ""
    backend: str | None = None
    program: str | None = None
    instance: str | None = None
    session: str | None = None
    route: str | None = None
    method: str | None = None
    # Chance that a matching event is hit, 0 to 1.
    probability: float = 1.0
    # Most times the rule fires; unset: unlimited.
    count: int | None = None
    # job_failure / job_cancel: IBM's reason code (job_failure: 1517 by default).
    reason_code: int | None = None
    # The failure, cancel, status or error message.
    message: str | None = None
    # backend_status: ``maintenance`` (default) or ``internal``.
    status: str | None = None
    # http_error: 429, 500, 502, 503 or 504.
    status_code: int | None = None
    # http_error: seconds sent as ``Retry-After``.
    retry_after: int | None = None
    # latency: milliseconds added to the request.
    latency_ms: int | None = None
    # When the rule was stored (UNIX seconds, set by the server): rules are tried oldest first.
    created: float | None = None


_decode_rule = msgspec.json.Decoder(FaultRule).decode
_encode = msgspec.json.Encoder().encode


class InvalidRule(ValueError):
    """A rule that cannot be stored: unknown effect, a field its effect does not use, a bad value."""


def check_rule(rule: FaultRule) -> FaultRule:
    """``rule`` validated, with its effect's defaults filled in.

    Raises:
        InvalidRule: what is wrong, in a sentence.
    """
    if rule.effect not in MATCH_FIELDS:
        raise InvalidRule(f"effect must be one of {', '.join(MATCH_FIELDS)}, got {rule.effect!r}.")
    for name in _ALL_MATCH_FIELDS:
        if getattr(rule, name) is not None and name not in MATCH_FIELDS[rule.effect]:
            allowed = ", ".join(sorted(MATCH_FIELDS[rule.effect]))
            raise InvalidRule(f"A {rule.effect} rule cannot match on {name}; it can match on {allowed}.")
    for name in _ALL_PARAMETERS:
        if getattr(rule, name) is not None and name not in PARAMETERS[rule.effect]:
            raise InvalidRule(f"{name} does not apply to a {rule.effect} rule.")
    if not 0.0 <= rule.probability <= 1.0:
        raise InvalidRule(f"probability must be between 0 and 1, got {rule.probability}.")
    if rule.count is not None and rule.count < 1:
        raise InvalidRule(f"count must be at least 1 (leave it out for no limit), got {rule.count}.")
    if rule.id and (len(rule.id) > 64 or not all(c.isalnum() or c in "-_." for c in rule.id)):
        raise InvalidRule("id must be 1 to 64 letters, digits, '-', '_' or '.'.")
    changes: dict[str, object] = {}
    if rule.method is not None:
        changes["method"] = rule.method.upper()
    if rule.effect == JOB_FAILURE and rule.reason_code is None:
        changes["reason_code"] = REASON_EXECUTION_ERROR
    if rule.effect == BACKEND_STATUS:
        if (rule.status or "maintenance") not in BACKEND_STATES:
            raise InvalidRule(f"status must be one of {', '.join(BACKEND_STATES)}, got {rule.status!r}.")
        changes["status"] = rule.status or "maintenance"
    if rule.effect == HTTP_ERROR:
        if rule.status_code not in HTTP_ERRORS:
            offered = ", ".join(str(code) for code in HTTP_ERRORS)
            raise InvalidRule(f"status_code must be one of {offered}, got {rule.status_code!r}.")
        if rule.retry_after is not None and not 0 <= rule.retry_after <= 3600:
            raise InvalidRule(f"retry_after must be 0 to 3600 seconds, got {rule.retry_after}.")
    if rule.effect == LATENCY and (rule.latency_ms is None or not 0 < rule.latency_ms <= MAX_LATENCY_MS):
        raise InvalidRule(f"latency_ms must be 1 to {MAX_LATENCY_MS}, got {rule.latency_ms!r}.")
    return msgspec.structs.replace(rule, **changes) if changes else rule


def parse_rule(data: bytes | Mapping[str, object]) -> FaultRule:
    """A checked rule from JSON bytes or a mapping.

    Raises:
        InvalidRule: malformed JSON, unknown fields, wrong types, or what :func:`check_rule` refuses.
    """
    try:
        rule = _decode_rule(data) if isinstance(data, bytes) else msgspec.convert(data, FaultRule)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRule(f"Invalid fault rule: {exc}") from None
    return check_rule(rule)


def job_reason(rule: FaultRule) -> str:
    """The ``state.reason`` of a job hit by a job_failure or job_cancel rule."""
    if rule.effect == JOB_CANCEL:
        return rule.message or DEFAULT_JOB_CANCEL
    message = rule.message or DEFAULT_JOB_FAILURE
    if rule.reason_code == REASON_EXECUTION_ERROR and not message.startswith("Error in job execution"):
        # IBM's 1517 text, as the server's own execution errors read (worker/tasks.py).
        return f"Error in job execution: {message}"
    return message


def _glob(value: str | None, pattern: str) -> bool:
    return value is not None and fnmatch.fnmatchcase(value, pattern)


def _route(path: str | None, pattern: str) -> bool:
    """The path as routed (``/api/v1/jobs``), or the runtime API's path without ``/api/v1``."""
    if path is None:
        return False
    if fnmatch.fnmatchcase(path, pattern):
        return True
    return path.startswith("/api/v1/") and fnmatch.fnmatchcase(path[len("/api/v1") :], pattern)


def matches(rule: FaultRule, event: Mapping[str, str | None]) -> bool:
    """Whether every match field ``rule`` sets fits ``event`` (its ``backend``, ``route``...)."""
    for name in _ALL_MATCH_FIELDS:
        pattern = getattr(rule, name)
        if pattern is None:
            continue
        value = event.get(name)
        if name == "route":
            ok = _route(value, pattern)
        elif name == "method":
            ok = value is not None and value.upper() == pattern
        else:
            ok = _glob(value, pattern)
        if not ok:
            return False
    return True


class Rules(msgspec.Struct, frozen=True):
    """The stored rules of some effects, in the order they were added, and their firings left."""

    rules: tuple[FaultRule, ...] = ()
    left: Mapping[str, int] = msgspec.field(default_factory=dict)

    def live(self, effect: str, event: Mapping[str, str | None]) -> list[FaultRule]:
        """The rules of ``effect`` matching ``event`` that have firings left."""
        return [r for r in self.rules if r.effect == effect and self.left.get(r.id, 1) > 0 and matches(r, event)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class FaultStore:
    """The rules in Redis (see the module's key table) and the one place that fires them.

    ``rng`` draws the probabilities: seed one for a reproducible sequence (unit tests).
    """

    def __init__(self, redis: Redis, rng: random.Random | None = None) -> None:
        self.redis = redis
        self.rng = rng or random.Random()

    async def add(self, rule: FaultRule, *, only_new: bool = False) -> FaultRule | None:
        """Store ``rule`` (checked), with an id made up when it has none; returns it as stored.

        With ``only_new`` an existing rule of the same id is left as it is (and its count too)
        and ``None`` is returned: configured rules are installed this way by every process.
        """
        rule = check_rule(rule)
        rule = msgspec.structs.replace(rule, id=rule.id or "f-" + secrets.token_hex(4), created=time.time())
        encoded = _encode(rule).decode()
        if only_new:
            (new,) = await self._run(lambda pipe: pipe.hsetnx(RULES, rule.id, encoded))
            if not new:
                return None
            if rule.count is not None:
                await self._run(lambda pipe: pipe.hset(LEFT, rule.id, str(rule.count)))
            return rule
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(RULES, rule.id, encoded)
            pipe.hdel(FIRED, rule.id)
            if rule.count is not None:
                pipe.hset(LEFT, rule.id, str(rule.count))
            else:
                pipe.hdel(LEFT, rule.id)
            await pipe.execute()
        return rule

    async def snapshot(self, effects: Iterable[str] | None = None) -> Rules:
        """The stored rules (of ``effects`` only, if given) and their firings left: one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(RULES)
            pipe.hgetall(LEFT)
            raw_rules, raw_left = await pipe.execute()
        wanted = None if effects is None else frozenset(effects)
        rules = []
        for raw in raw_rules.values():
            try:
                rule = _decode_rule(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not a rule this version reads: ignored
            if wanted is None or rule.effect in wanted:
                rules.append(rule)
        rules.sort(key=lambda r: (r.created or 0.0, r.id))
        left = {_text(k): int(v) for k, v in raw_left.items()}
        return Rules(tuple(rules), left)

    async def fire(self, rule: FaultRule) -> bool:
        """Draw ``rule``'s probability and take one of its firings; whether it fires now.

        The count is shared by every process: the decrement is one atomic ``HINCRBY``, and a
        rule whose count went below zero did not fire (another process took its last one).
        """
        if rule.probability < 1.0 and self.rng.random() >= rule.probability:
            return False
        if rule.count is not None:
            (left,) = await self._run(lambda pipe: pipe.hincrby(LEFT, rule.id, -1))
            if left < 0:
                return False
        await self._run(lambda pipe: pipe.hincrby(FIRED, rule.id, 1))
        return True

    async def _run(self, queue: Callable[[Pipeline], object]) -> list[Any]:
        """The replies of the commands ``queue`` puts on a pipeline (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            queue(pipe)
            return list(await pipe.execute())

    async def first_firing(self, rules: Iterable[FaultRule]) -> FaultRule | None:
        """The first of ``rules`` that fires (each is drawn in turn until one does)."""
        for rule in rules:
            if await self.fire(rule):
                return rule
        return None

    async def listing(self) -> list[dict[str, object]]:
        """Every rule as stored, with ``remaining`` (``None``: unlimited) and ``fired``."""
        rules = await self.snapshot()
        (raw_fired,) = await self._run(lambda pipe: pipe.hgetall(FIRED))
        fired = {_text(k): int(v) for k, v in raw_fired.items()}
        out: list[dict[str, object]] = []
        for rule in rules.rules:
            entry = msgspec.to_builtins(rule)
            entry["remaining"] = None if rule.count is None else max(0, rules.left.get(rule.id, 0))
            entry["fired"] = fired.get(rule.id, 0)
            out.append(entry)
        return out

    async def remove(self, rule_id: str) -> bool:
        """Remove one rule; whether it existed."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(RULES, rule_id)
            pipe.hdel(LEFT, rule_id)
            pipe.hdel(FIRED, rule_id)
            removed, _, _ = await pipe.execute()
        return bool(removed)

    async def clear(self) -> int:
        """Remove every rule; how many there were."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hlen(RULES)
            pipe.delete(RULES, LEFT, FIRED)
            count, _ = await pipe.execute()
        return int(count)


ALLOW_MODES = ("false", "true", "force")


def allow_mode(settings: Settings) -> str:
    """``QRS_ALLOW_FAULTS`` lowercased: ``false``, ``true`` or ``force``.

    Raises:
        ValueError: any other value (start-up fails, naming the variable).
    """
    mode = settings.allow_faults.strip().lower()
    if mode not in ALLOW_MODES:
        raise ValueError(f"QRS_ALLOW_FAULTS={settings.allow_faults!r} is not one of {', '.join(ALLOW_MODES)}")
    return mode


def enabled(settings: Settings) -> bool:
    """Whether this process consults fault rules: ``QRS_ALLOW_FAULTS`` is not ``false``, or rules
    are configured (``QRS_FAULTS``, ``QRS_FAULTS_FILE``)."""
    return allow_mode(settings) != "false" or bool(settings.faults) or bool(settings.faults_file)


def configured_rules(settings: Settings) -> list[FaultRule]:
    """The rules of ``QRS_FAULTS`` and then ``QRS_FAULTS_FILE``, checked; those without an id are
    named ``config-1``, ``config-2``... in that order, so every process installs the same ones.

    Either holds one rule object, a list of them, or ``{"faults": [...]}``.

    Raises:
        ValueError: unreadable file, malformed JSON or an invalid rule (start-up fails loudly).
    """
    sources: list[tuple[str, str]] = []
    if settings.faults:
        sources.append(("QRS_FAULTS", settings.faults))
    if settings.faults_file:
        try:
            sources.append((f"QRS_FAULTS_FILE {settings.faults_file}", Path(settings.faults_file).read_text()))
        except OSError as exc:
            raise ValueError(f"QRS_FAULTS_FILE {settings.faults_file}: {exc}") from exc
    rules: list[FaultRule] = []
    for where, text in sources:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if isinstance(data, dict) and "faults" in data:
            data = data["faults"]
        items = data if isinstance(data, list) else [data]
        for item in items:
            if not isinstance(item, dict):
                raise ValueError(f"{where}: a rule must be a JSON object, got {item!r}")
            try:
                rule = parse_rule(item)
            except InvalidRule as exc:
                raise ValueError(f"{where}: {exc}") from exc
            if not rule.id:
                rule = msgspec.structs.replace(rule, id=f"config-{len(rules) + 1}")
            rules.append(rule)
    return rules


async def install_configured(store: FaultStore, rules: Iterable[FaultRule]) -> None:
    """Store the configured rules not stored yet (a restart does not refill a spent count)."""
    for rule in rules:
        await store.add(rule, only_new=True)
