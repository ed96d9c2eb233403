"""Fractional gates (``rzz``, ``rx``) on the devices IBM offers them on, as plain JSON.

IBM's configuration of a Heron or Nighthawk device lists ``rzz`` (on every ``cz`` pair) and
``rx`` (on every qubit) in ``basis_gates``, ``gates`` and ``supported_instructions``; the client
removes them again unless ``service.backend(name, use_fractional_gates=True)`` asks for them
(``qiskit_ibm_runtime.utils.backend_decoder.filter_raw_configuration``) and builds the
``Target`` from what is left. The ``conf_*.json`` snapshots the client ships were saved after
that filter, so they lack both gates; this module puts them back, for the API (what
``GET /backends/{name}/configuration`` and ``.../properties`` answer) and for the worker (the
fake backend whose ``Target`` the ISA check and ``NoiseModel.from_backend`` read).

Their calibration is kept where the snapshot has one and derived where it does not: ``rx`` on a
qubit takes that qubit's ``rx`` entry, else its ``sx`` entry (error and duration; IBM drives both
with the same pulse, and its ``rx`` entries equal the ``sx`` ones); ``rzz`` on a pair takes that
pair's ``rzz`` entry unless it is missing or says ``gate_error`` 1 (IBM's mark of an
uncalibrated gate, e.g. every pair of fake_torino), else the ``cz`` entry on the pair.

No qiskit here: the API imports this module.
"""

from __future__ import annotations

import copy
from typing import Any

# Processor families whose devices IBM offers fractional gates on.
FRACTIONAL_FAMILIES = frozenset({"Heron", "Nighthawk"})
FRACTIONAL_GATES = ("rx", "rzz")
# The two-qubit gate whose pairs and calibration ``rzz`` takes, and the one-qubit one for ``rx``.
_RZZ_FROM, _RX_FROM = "cz", "sx"
_GATE_CONFIGS: dict[str, dict[str, object]] = {
    "rx": {"name": "rx", "parameters": ["theta"], "qasm_def": "gate rx(theta) q { U(theta, -pi/2, pi/2) q; }"},
    "rzz": {
        "name": "rzz",
        "parameters": ["theta"],
        "qasm_def": "gate rzz(theta) q0, q1 { CX q0, q1; U(0, 0, theta) q1; CX q0, q1; }",
    },
}


def offers_fractional_gates(configuration: dict[str, Any]) -> bool:
    """Whether IBM offers fractional gates on this device: a Heron or Nighthawk with ``cz``, or
    a configuration that already lists one of them (``fake_fractional``)."""
    basis = configuration.get("basis_gates") or []
    if any(gate in basis for gate in FRACTIONAL_GATES):
        return True
    processor = configuration.get("processor_type")
    family = processor.get("family") if isinstance(processor, dict) else None
    return family in FRACTIONAL_FAMILIES and _RZZ_FROM in basis


def _adds_fractional_gates(configuration: dict[str, Any]) -> bool:
    """Whether this module adds the gates: the device offers them and its snapshot lacks one."""
    basis = configuration.get("basis_gates") or []
    return offers_fractional_gates(configuration) and not all(gate in basis for gate in FRACTIONAL_GATES)


def _with_names(names: list[Any], added: tuple[str, ...]) -> list[Any]:
    missing = [name for name in added if name not in names]
    if not missing:
        return names
    # IBM lists Heron basis gates sorted; keep a sorted list sorted, append otherwise.
    if all(isinstance(name, str) for name in names) and names == sorted(names):
        return sorted([*names, *missing])
    return [*names, *missing]


def fractional_configuration(configuration: dict[str, Any]) -> dict[str, Any]:
    """``configuration`` with ``rzz`` and ``rx`` in ``basis_gates``, ``supported_instructions``
    and ``gates`` (``rzz`` on the ``cz`` coupling map, ``rx`` on ``sx``'s), when the device offers
    fractional gates and its snapshot lacks them; otherwise ``configuration`` itself (a device
    without them, or ``fake_fractional``, whose snapshot has both). Never modifies its argument."""
    if not _adds_fractional_gates(configuration):
        return configuration
    conf = dict(configuration)
    conf["basis_gates"] = _with_names(list(conf.get("basis_gates") or []), FRACTIONAL_GATES)
    if isinstance(conf.get("supported_instructions"), list):
        conf["supported_instructions"] = _with_names(list(conf["supported_instructions"]), FRACTIONAL_GATES)
    gates = conf.get("gates")
    if isinstance(gates, list):
        by_name = {gate.get("name"): gate for gate in gates if isinstance(gate, dict)}
        added = []
        for name, source in (("rx", _RX_FROM), ("rzz", _RZZ_FROM)):
            coupling = (by_name.get(source) or {}).get("coupling_map")
            if name not in by_name and coupling:
                added.append({**_GATE_CONFIGS[name], "coupling_map": copy.deepcopy(coupling)})
        if added:
            conf["gates"] = [*gates, *added]
    return conf


def _error(entry: dict[str, Any]) -> Any:
    for parameter in entry.get("parameters") or []:
        if parameter.get("name") == "gate_error":
            return parameter.get("value")
    return None


def fractional_properties(properties: dict[str, Any], configuration: dict[str, Any]) -> dict[str, Any]:
    """``properties`` with an ``rx`` entry on every qubit that has ``sx`` and an ``rzz`` entry
    on every pair that has ``cz``, calibrated as the module says, when the device (given by its
    ``configuration``) offers fractional gates and its snapshot lacks them; otherwise
    ``properties`` itself. Parameters are
    copied as they are (dates stay strings or datetimes). Never modifies its arguments."""
    gates = properties.get("gates")
    if not _adds_fractional_gates(configuration) or not isinstance(gates, list):
        return properties
    by_key: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}
    for entry in gates:
        by_key.setdefault((entry.get("gate"), tuple(entry.get("qubits") or ())), entry)
    out: list[dict[str, Any]] = []
    derived: list[dict[str, Any]] = []
    for entry in gates:
        name, qubits = entry.get("gate"), tuple(entry.get("qubits") or ())
        source = by_key.get((_RZZ_FROM, qubits))
        if name == "rzz" and _error(entry) == 1 and source is not None and _error(source) != 1:
            continue  # uncalibrated: replaced by the cz-derived entry below
        out.append(entry)
    kept = {(entry.get("gate"), tuple(entry.get("qubits") or ())) for entry in out}
    for entry in gates:
        name, qubits = entry.get("gate"), tuple(entry.get("qubits") or ())
        target = {_RX_FROM: "rx", _RZZ_FROM: "rzz"}.get(name)
        if target is None or (target, qubits) in kept:
            continue
        kept.add((target, qubits))
        derived.append(
            {
                "qubits": list(qubits),
                "gate": target,
                "parameters": copy.deepcopy(entry.get("parameters") or []),
                "name": target + "_".join(str(q) for q in qubits),
            }
        )
    if not derived:
        return properties
    return {**properties, "gates": out + derived}
