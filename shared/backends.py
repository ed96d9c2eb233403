"""The fake-backend catalogue, read from the JSON files that ``qiskit_ibm_runtime`` ships.

The client package stores one folder per device under ``fake_provider/backends/<name>/`` with
``conf_<name>.json`` (a ``QasmBackendConfiguration`` dict) and usually ``props_<name>.json``
(``BackendProperties``). Every fake backend class names itself ``fake_<folder>``, so that is the
name served here. The files are located with ``importlib.util.find_spec``, which does not
execute the package: the API never imports qiskit. ``QRS_BACKENDS_DIR`` points at a copy of the
folder instead (the API image carries only these files).
"""

from __future__ import annotations

import importlib.util
import os
from datetime import datetime
from functools import cached_property
from pathlib import Path

import msgspec

from shared.errors import BackendNotFound


def default_backends_dir() -> Path:
    """Folder holding the client's fake backends; ``QRS_BACKENDS_DIR`` wins when set.

    Raises:
        RuntimeError: neither the variable nor an installed ``qiskit_ibm_runtime`` is found.
    """
    if configured := os.environ.get("QRS_BACKENDS_DIR"):
        return Path(configured)
    spec = importlib.util.find_spec("qiskit_ibm_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("qiskit_ibm_runtime is not installed and QRS_BACKENDS_DIR is not set")
    return Path(next(iter(spec.submodule_search_locations))) / "fake_provider" / "backends"


class FakeBackendFiles:
    """One fake backend: its configuration and properties, loaded on first use and cached.

    ``configuration_json`` and ``properties_json`` are the bodies of
    ``GET /backends/{name}/configuration`` and ``.../properties``, with ``backend_name``
    rewritten to the served name (PROTOCOL.md P5).
    """

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        short = folder.name
        self.conf_path = folder / f"conf_{short}.json"
        self.props_path = folder / f"props_{short}.json"

    @cached_property
    def configuration(self) -> dict[str, object]:
        conf = msgspec.json.decode(self.conf_path.read_bytes())
        conf["backend_name"] = self.name
        return conf

    @cached_property
    def configuration_json(self) -> bytes:
        return msgspec.json.encode(self.configuration)

    @cached_property
    def properties(self) -> dict[str, object] | None:
        if not self.props_path.exists():
            return None
        props = msgspec.json.decode(self.props_path.read_bytes())
        props["backend_name"] = self.name
        return props

    @cached_property
    def properties_json(self) -> bytes:
        return msgspec.json.encode(self.properties or {})

    def properties_json_before(self, updated_before: datetime) -> bytes:
        """Properties as of ``updated_before``: the one snapshot if it is older, else ``{}``.

        A fake backend has a single calibration snapshot, so asking for an earlier date than its
        ``last_update_date`` finds none. ``{}`` (never 404) keeps the client working (P6).
        """
        props = self.properties
        if not props:
            return b"{}"
        last = _parse_time(str(props.get("last_update_date", "")))
        if last is not None and updated_before.tzinfo is None:
            updated_before = updated_before.replace(tzinfo=last.tzinfo)
        if last is not None and last > updated_before:
            return b"{}"
        return self.properties_json

    @cached_property
    def num_qubits(self) -> int:
        return int(self.configuration.get("n_qubits", 0))  # type: ignore[call-overload]

    def device_entry(self, queue_length: int) -> dict[str, object]:
        """This backend's entry in ``GET /backends`` (PROTOCOL.md §4.2)."""
        conf = self.configuration
        entry: dict[str, object] = {
            "name": self.name,
            "status": {"name": "online", "reason": "available"},
            "qubits": self.num_qubits,
            "physical_qubits": self.num_qubits,
            "queue_length": queue_length,
            "is_simulator": False,
        }
        if processor_type := conf.get("processor_type"):
            entry["processor_type"] = processor_type
        return entry


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class BackendCatalog:
    """All fake backends found in ``folder``, by served name (``fake_manila``...)."""

    def __init__(self, folder: Path | None = None) -> None:
        root = folder or default_backends_dir()
        self._backends: dict[str, FakeBackendFiles] = {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if (sub / f"conf_{sub.name}.json").exists():
                name = f"fake_{sub.name}"
                self._backends[name] = FakeBackendFiles(name, sub)

    def names(self) -> list[str]:
        return list(self._backends)

    def __contains__(self, name: object) -> bool:
        return name in self._backends

    def get(self, name: str) -> FakeBackendFiles:
        """The backend called ``name``.

        Raises:
            BackendNotFound: no fake backend has that name (404 on the wire).
        """
        try:
            return self._backends[name]
        except KeyError:
            raise BackendNotFound(name) from None
