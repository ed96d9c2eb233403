"""The fake-backend catalogue, read from the JSON files that ``qiskit_ibm_runtime`` ships.

The client package stores one folder per device under ``fake_provider/backends/<name>/`` with
``conf_<name>.json`` (a ``QasmBackendConfiguration`` dict) and usually ``props_<name>.json``
(``BackendProperties``). The files are located with ``importlib.util.find_spec``, which does not
execute the package: the API never imports qiskit. ``QRS_BACKENDS_DIR`` points at a copy of the
folder instead (the API image carries only these files).

Every device is served under several names (docs/compatibility.md, "IBM behaviours"):

* ``fake_<folder>``: its primary name, the one ``least_busy`` can choose;
* its IBM device name (``ibm_sherbrooke``, ``ibmq_manila``...), so code written for IBM runs
  unchanged;
* operator aliases from ``QRS_BACKEND_ALIASES`` (``alias=backend,alias2=backend2``);
* ``mock_<suffix>`` mock devices (``"class": "mock"``), named by the client's ``dry_run`` rule
  from each of the names above: their jobs return random data of the right shapes.

The client only resolves names that ``GET /backends`` lists, so every name is listed; only the
primary entry has status ``online`` (the other names say ``alias``), which is what
``least_busy`` filters on, so it sees each device once and never a mock.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache, cached_property
from pathlib import Path
from typing import Literal, cast

import msgspec

from qiskit_runtime_server.shared.errors import BackendNotFound, NotFound
from qiskit_runtime_server.shared.fractional import fractional_configuration, fractional_properties

Role = Literal["device", "ibm_name", "alias", "mock"]
MOCK_CLASS = "mock"
# The client's dry_run rule (QiskitRuntimeService._run): the part before the first "_" becomes "mock".
_DRY_RUN_PREFIX = re.compile(r"^[^_]+")
_ALIAS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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


def dry_run_name(name: str) -> str | None:
    """The mock device the client looks up for ``run(..., dry_run=True)`` on ``name``.

    ``fake_sherbrooke`` and ``ibm_sherbrooke`` give ``mock_sherbrooke``. ``None`` for a name
    without ``_`` (the client's rule would give the bare ``mock``) and for mock names themselves.
    """
    if "_" not in name or name.startswith("mock_"):
        return None
    return _DRY_RUN_PREFIX.sub("mock", name)


def ibm_device_name(folder: str, conf_name: str) -> str | None:
    """The IBM name of the device a fake backend snapshots, or ``None`` for synthetic ones.

    The configuration's ``backend_name`` when it is an IBM name (``ibm_*``, ``ibmq_*``,
    ``ibmqx2``); ``ibm_<folder>`` for the ``alt_*`` snapshots of IBM devices (``alt_auckland``);
    none for ``fake_*`` devices that never existed (``fake_fractional``, ``fake_nighthawk``).
    """
    if conf_name.startswith("ibm"):
        return conf_name
    if conf_name.startswith("alt_"):
        return f"ibm_{folder}"
    return None


class CalibrationNotFound(NotFound):
    """404 for a ``calibration_id`` the backend does not have (the client raises
    ``QiskitBackendNotFoundError`` for it on ``service.backend(name, calibration_id=...)``)."""

    def __init__(self, calibration_id: str, backend: str) -> None:
        super().__init__(f"Calibration {calibration_id} not found for backend {backend}.")


class FakeBackendFiles:
    """One fake device: its configuration and properties files, loaded on first use and cached.

    ``name`` is the primary served name, ``fake_<folder>``.
    """

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        short = folder.name
        self.conf_path = folder / f"conf_{short}.json"
        self.props_path = folder / f"props_{short}.json"

    @cached_property
    def raw_configuration(self) -> dict[str, object]:
        return msgspec.json.decode(self.conf_path.read_bytes(), type=dict[str, object])

    @cached_property
    def raw_properties(self) -> dict[str, object] | None:
        if not self.props_path.exists():
            return None
        props = msgspec.json.decode(self.props_path.read_bytes())
        return props or None

    @cached_property
    def served_configuration(self) -> dict[str, object]:
        """The configuration as IBM serves it: with ``rzz``/``rx`` on the devices that offer
        fractional gates (``shared/fractional.py``; the client filters them out again unless
        ``use_fractional_gates=True``)."""
        return fractional_configuration(self.raw_configuration)

    @cached_property
    def served_properties(self) -> dict[str, object] | None:
        """The properties with the fractional gates' calibration (kept or derived, see
        ``shared/fractional.py``) on the devices that offer them."""
        raw = self.raw_properties
        return None if raw is None else fractional_properties(raw, self.raw_configuration)

    @cached_property
    def calibration_id(self) -> str:
        """A stable id of this device's one calibration snapshot: 16 hex digits of the SHA-256
        of its properties file and ``last_update_date`` (of the configuration without one)."""
        if self.props_path.exists():
            data = self.props_path.read_bytes()
            last = str((self.raw_properties or {}).get("last_update_date", ""))
        else:
            data, last = self.conf_path.read_bytes(), ""
        return hashlib.sha256(data + last.encode()).hexdigest()[:16]

    @cached_property
    def num_qubits(self) -> int:
        return int(cast(int, self.raw_configuration.get("n_qubits", 0)))

    @cached_property
    def ibm_name(self) -> str | None:
        return ibm_device_name(self.folder.name, str(self.raw_configuration.get("backend_name", "")))


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(eq=False)
class ServedBackend:
    """One name under which a device is served.

    ``configuration_json`` and ``properties_json`` are the bodies of
    ``GET /backends/{name}/configuration`` and ``.../properties`` with ``backend_name``
    rewritten to this name (docs/protocol.md P5); the properties also carry ``calibration_id``,
    which the client shows as ``backend.properties().calibration_id``.
    """

    name: str
    device: FakeBackendFiles
    role: Role

    @property
    def is_mock(self) -> bool:
        return self.role == "mock"

    @property
    def simulated(self) -> str:
        """The primary name of the device whose noise model this name's jobs run with."""
        return self.device.name

    @property
    def queue_group(self) -> str:
        """Names sharing a queue: every real name of a device, or its mocks (a separate queue)."""
        return f"{'mock' if self.is_mock else 'device'}:{self.device.name}"

    @property
    def calibration_id(self) -> str:
        return self.device.calibration_id

    @property
    def num_qubits(self) -> int:
        return self.device.num_qubits

    @cached_property
    def configuration(self) -> dict[str, object]:
        conf = dict(self.device.served_configuration)
        conf["backend_name"] = self.name
        return conf

    @cached_property
    def configuration_json(self) -> bytes:
        return msgspec.json.encode(self.configuration)

    @cached_property
    def properties(self) -> dict[str, object] | None:
        raw = self.device.served_properties
        if raw is None:
            return None
        return {**raw, "backend_name": self.name, "calibration_id": self.calibration_id}

    @cached_property
    def properties_json(self) -> bytes:
        return msgspec.json.encode(self.properties or {})

    def check_calibration(self, calibration_id: str | None) -> None:
        """Accept ``calibration_id`` when it is absent or this device's.

        Raises:
            CalibrationNotFound: any other id (404).
        """
        if calibration_id is not None and calibration_id != self.calibration_id:
            raise CalibrationNotFound(calibration_id, self.name)

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

    def device_entry(self, queue_length: int) -> dict[str, object]:
        """This name's entry in ``GET /backends`` (docs/protocol.md §4.2).

        Every name is ``online`` (IBM's schema knows only ``online``, ``paused`` and
        ``offline``); names other than the primary one say ``another name of ...`` in
        ``status.reason`` and name the device in ``alias_of``, mock entries carry ``"class":
        "mock"``. The client's ``least_busy`` keeps the ``online`` entries that are not mocks and
        sorts them stably by ``queue_length``; every name of a device has the device's queue
        length and primary names are listed first, so it still picks a primary name.
        ``processor_type`` is given with strings, as in IBM's schema (the configurations carry
        ``revision`` as a number).
        """
        entry: dict[str, object] = {
            "name": self.name,
            "status": {"name": "online", "reason": "available"},
            "qubits": self.num_qubits,
            "physical_qubits": self.num_qubits,
            "queue_length": queue_length,
            "is_simulator": False,
            "calibration_id": self.calibration_id,
        }
        if self.is_mock:
            entry["class"] = MOCK_CLASS
        elif self.role != "device":
            entry["status"] = {"name": "online", "reason": f"another name of {self.device.name}"}
            entry["alias_of"] = self.device.name
        if processor_type := self.device.raw_configuration.get("processor_type"):
            entry["processor_type"] = _processor_type(processor_type)
        return entry


def _processor_type(raw: object) -> object:
    """A configuration's ``processor_type`` with ``family``, ``revision`` and ``segment`` as
    strings (or ``null``), IBM's schema for ``GET /backends``; anything else is passed on."""
    if not isinstance(raw, dict):
        return raw
    return {k: (None if v is None else str(v)) if k in ("family", "revision", "segment") else v for k, v in raw.items()}


def parse_aliases(text: str) -> list[tuple[str, str]]:
    """``QRS_BACKEND_ALIASES`` (``alias=backend,alias2=backend2``) as ``(alias, backend)`` pairs.

    Raises:
        ValueError: an entry is not ``name=backend`` or the alias is not a plain name; the
            message names the variable.
    """
    pairs = []
    for part in text.split(","):
        if not part.strip():
            continue
        alias, sep, target = (s.strip() for s in part.partition("="))
        if not sep or not alias or not target:
            raise ValueError(f"QRS_BACKEND_ALIASES: expected alias=backend, got {part.strip()!r}")
        if not _ALIAS_NAME.match(alias) or alias.startswith("mock_"):
            raise ValueError(
                f"QRS_BACKEND_ALIASES: {alias!r} is not a usable backend name "
                "(letters, digits, '_', '.', '-'; not starting with 'mock_')"
            )
        pairs.append((alias, target))
    return pairs


class BackendCatalog:
    """All fake devices found in ``folder``, by every name they are served under.

    Args:
        folder: the fake backends folder; :func:`default_backends_dir` when omitted.
        aliases: ``QRS_BACKEND_ALIASES`` text; read from the environment when ``None``.

    Raises:
        ValueError: an alias is malformed, names an unknown backend or a name already taken;
            the message names ``QRS_BACKEND_ALIASES``.
    """

    def __init__(self, folder: Path | None = None, aliases: str | None = None) -> None:
        root = folder or default_backends_dir()
        if aliases is None:
            aliases = os.environ.get("QRS_BACKEND_ALIASES", "")
        self._served: dict[str, ServedBackend] = {}
        devices = []
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if (sub / f"conf_{sub.name}.json").exists():
                device = FakeBackendFiles(f"fake_{sub.name}", sub)
                devices.append(device)
                self._add(device.name, device, "device")
        for device in devices:
            if device.ibm_name and device.ibm_name not in self._served:
                self._add(device.ibm_name, device, "ibm_name")
        for alias, target in parse_aliases(aliases):
            if alias in self._served:
                raise ValueError(f"QRS_BACKEND_ALIASES: {alias!r} is already the name of a backend")
            if target not in self._served:
                raise ValueError(f"QRS_BACKEND_ALIASES: {alias}={target}: no backend is called {target!r}")
            self._add(alias, self._served[target].device, "alias")
        for served in list(self._served.values()):
            mock = dry_run_name(served.name)
            if mock and mock not in self._served:
                self._add(mock, served.device, "mock")
        self._groups: dict[str, list[str]] = {}
        for served in self._served.values():
            self._groups.setdefault(served.queue_group, []).append(served.name)

    def _add(self, name: str, device: FakeBackendFiles, role: Role) -> None:
        self._served[name] = ServedBackend(name, device, role)

    def names(self, include_mocks: bool = True) -> list[str]:
        """Every served name: primary names, IBM names, aliases, then mocks (if included)."""
        return [n for n, s in self._served.items() if include_mocks or not s.is_mock]

    def same_queue(self, name: str) -> list[str]:
        """The names whose jobs count in ``name``'s queue length (all names of its device)."""
        return self._groups[self.get(name).queue_group]

    def same_device(self, name: str, other: str) -> bool:
        """Whether ``name`` and ``other`` are served names of one device (its mocks included)."""
        if name not in self._served or other not in self._served:
            return name == other
        return self._served[name].device is self._served[other].device

    def __contains__(self, name: object) -> bool:
        return name in self._served

    def get(self, name: str) -> ServedBackend:
        """The backend served as ``name``.

        Raises:
            BackendNotFound: no backend has that name (404 on the wire).
        """
        try:
            return self._served[name]
        except KeyError:
            raise BackendNotFound(name) from None


@cache
def default_catalog() -> BackendCatalog:
    """The catalogue of this process (folder and aliases from the environment), built once.

    Workers use it to map a job's backend name to the device to simulate.
    """
    return BackendCatalog()
