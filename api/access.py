"""Access control: which API keys may use which instances, and per-instance usage limits.

Open mode (the default, for local use): any API key is accepted for any instance CRN. Access
control is on as soon as keys are configured, through either or both of

* ``QRS_API_KEYS="key1=crn1,crn2;key2=crn3"``
* ``QRS_ACCESS_FILE=/path/access.json`` with
  ``{"keys": {"key1": ["crn1", "crn2"]}, "usage_limits": {"crn1": 3600}}``

Then ``/identity/token`` refuses unknown keys (400, like IBM IAM), Global Search lists only the
key's instances, and a runtime call whose ``Service-CRN`` is not one of the key's instances gets
403. Keys are kept only as their :func:`api.auth.key_id` hashes in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from qiskit_runtime_server.shared.settings import Settings


class AccessFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Schema of ``QRS_ACCESS_FILE``."""

    keys: dict[str, list[str]] = msgspec.field(default_factory=dict)
    usage_limits: dict[str, float] = msgspec.field(default_factory=dict)


class AccessPolicy:
    """Key → instances mapping (empty: open mode) and per-instance usage limits in seconds."""

    def __init__(
        self,
        instances_by_key: dict[str, frozenset[str]] | None = None,
        usage_limits: dict[str, float] | None = None,
        default_limit: float | None = None,
    ) -> None:
        self._instances = dict(instances_by_key or {})
        self._limits = dict(usage_limits or {})
        self._default_limit = default_limit

    @property
    def open(self) -> bool:
        """``True`` when no keys are configured: every key may use every instance."""
        return not self._instances

    def knows(self, key_id: str) -> bool:
        """Whether the hashed key may obtain tokens."""
        return self.open or key_id in self._instances

    def instances(self, key_id: str) -> frozenset[str] | None:
        """The instances of a key; ``None`` in open mode (all)."""
        return None if self.open else self._instances.get(key_id, frozenset())

    def allows(self, key_id: str, instance: str) -> bool:
        allowed = self.instances(key_id)
        return allowed is None or instance in allowed

    def usage_limit(self, instance: str) -> float | None:
        """Monthly simulation seconds allowed to ``instance``; ``None`` for no limit."""
        return self._limits.get(instance, self._default_limit)


def parse_key_list(text: str) -> dict[str, list[str]]:
    """``"k1=crn1,crn2;k2=crn3"`` → ``{"k1": ["crn1", "crn2"], "k2": ["crn3"]}``.

    Raises:
        ValueError: an entry has no ``=`` or no instance.
    """
    out: dict[str, list[str]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        key, sep, crns = entry.partition("=")
        instances = [c.strip() for c in crns.split(",") if c.strip()]
        if not sep or not key.strip() or not instances:
            raise ValueError(f"QRS_API_KEYS entry {entry!r} must look like key=crn1,crn2")
        out.setdefault(key.strip(), []).extend(instances)
    return out


def load_policy(settings: Settings) -> AccessPolicy:
    """The policy of ``QRS_API_KEYS``, ``QRS_ACCESS_FILE`` and ``QRS_USAGE_LIMIT_SECONDS``.

    Raises:
        ValueError: a malformed ``QRS_API_KEYS`` or access file (start-up fails loudly).
    """
    from qiskit_runtime_server.api.auth import key_id

    keys: dict[str, list[str]] = {}
    limits: dict[str, float] = {}
    if settings.access_file:
        try:
            data = msgspec.json.decode(Path(settings.access_file).read_bytes(), type=AccessFile)
        except (OSError, msgspec.DecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"QRS_ACCESS_FILE {settings.access_file}: {exc}") from exc
        for key, crns in data.keys.items():
            keys.setdefault(key, []).extend(crns)
        limits.update(data.usage_limits)
    if settings.api_keys:
        for key, crns in parse_key_list(settings.api_keys).items():
            keys.setdefault(key, []).extend(crns)
    return AccessPolicy(
        {key_id(k): frozenset(v) for k, v in keys.items()},
        limits,
        settings.usage_limit_seconds,
    )
