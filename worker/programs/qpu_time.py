"""The QPU time IBM would bill for a job, from the backend's configuration (docs/timing.md).

IBM's "Workload usage" guide (``guides/estimate-job-run-time``) counts a job's usage as the
*quantum time* the QPU is locked for it: for each circuit executed, every shot costs the
repetition delay (the wait that lets the qubits relax between shots) plus the circuit's own
scheduled duration, and the job adds a fixed overhead (loading the instruments, compiling the
pulses), so::

    qpu_seconds = overhead + sum over executed circuits c of  shots(c) * (rep_delay + duration(c))

``rep_delay`` is the job's ``options.execution.rep_delay`` (seconds) or the backend's
``default_rep_delay`` (µs in its configuration JSON; 250 µs on the Eagle devices);
``duration(c)`` the length of the ASAP schedule of ``c`` from the gate and measurement durations
of the backend's target (its ``properties``). What one PUB executes:

* sampler: every parameter binding, ``shots`` times;
* estimator: every parameter binding in every measurement basis (the qubit-wise commuting groups
  of its observables' Pauli terms), ``ceil(1 / precision**2)`` times each.

Resilience (twirling, ZNE, PEC) multiplies the circuits IBM runs; this model counts the
unmitigated circuits only. Other programs (executor, noise learner) are not modelled here:
their QPU time is their simulation time plus the overhead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qiskit import QuantumCircuit
from qiskit.quantum_info import PauliList
from qiskit.transpiler import Target

# When a backend's configuration has no default_rep_delay: IBM's Eagle and Heron default.
DEFAULT_REP_DELAY = 250e-6

_DELAY_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "ps": 1e-12}


def rep_delay_seconds(configuration: Mapping[str, Any], options: Any = None) -> float:
    """The repetition delay of a job: ``options.execution.rep_delay`` (seconds) when set,
    else the configuration's ``default_rep_delay`` (µs), else :data:`DEFAULT_REP_DELAY`."""
    execution = options.get("execution") if isinstance(options, dict) else None
    chosen = execution.get("rep_delay") if isinstance(execution, dict) else None
    if isinstance(chosen, (int, float)) and chosen >= 0:
        return float(chosen)
    default = configuration.get("default_rep_delay")
    if isinstance(default, (int, float)) and default >= 0:
        return float(default) * 1e-6
    return DEFAULT_REP_DELAY


def circuit_seconds(circuit: QuantumCircuit, target: Target) -> float:
    """Length of one shot of ``circuit`` (seconds): the longest path of its ASAP schedule, each
    instruction taking its target duration on its qubits (0 when the target has none: barriers,
    virtual ``rz``); a ``delay`` takes its own duration."""
    index = {qubit: i for i, qubit in enumerate(circuit.qubits)}
    clock = [0.0] * circuit.num_qubits
    for instruction in circuit.data:
        qubits = tuple(index[q] for q in instruction.qubits)
        if not qubits:
            continue
        seconds = _instruction_seconds(instruction.operation, qubits, target)
        end = max(clock[q] for q in qubits) + seconds
        for q in qubits:
            clock[q] = end
    return max(clock, default=0.0)


def _instruction_seconds(operation: Any, qubits: tuple[int, ...], target: Target) -> float:
    if operation.name == "delay":
        unit = getattr(operation, "unit", "dt")
        scale = (target.dt or 0.0) if unit == "dt" else _DELAY_UNITS.get(unit, 0.0)
        return float(operation.duration) * scale
    try:
        properties = target[operation.name][qubits]
    except KeyError:
        return 0.0
    duration = getattr(properties, "duration", None)
    return float(duration) if duration else 0.0


def _bindings(values: Any) -> int:
    if values is None:
        return 1
    shape = getattr(values, "shape", None)
    if shape is None or len(shape) <= 1:
        return 1
    return max(1, math.prod(int(n) for n in shape[:-1]))


def measurement_bases(observables: Any) -> int:
    """Qubit-wise commuting groups of the Pauli terms of ``observables`` (a flattened list of
    ``{label: coeff}`` dicts, or one dict): the circuits an estimator PUB measures per binding."""
    terms = observables if isinstance(observables, list) else [observables]
    labels = sorted({label for term in terms for label in term if set(label) - {"I"}})
    if not labels:
        return 1
    return len(PauliList(labels).group_qubit_wise_commuting())


def sampler_seconds(pubs: list[Any], default_shots: int, target: Target, rep_delay: float) -> float:
    """QPU seconds (no overhead) of sampler PUBs ``[circuit, parameter_values?, shots?]``."""
    total = 0.0
    for pub in pubs:
        circuit = pub[0]
        values = pub[1] if len(pub) > 1 else None
        shots = pub[2] if len(pub) > 2 and pub[2] else default_shots
        total += _bindings(values) * shots * (rep_delay + circuit_seconds(circuit, target))
    return total


def estimator_seconds(pubs: list[Any], precision: float, target: Target, rep_delay: float) -> float:
    """QPU seconds (no overhead) of estimator PUBs ``[circuit, observables, values?, precision?]``."""
    total = 0.0
    for pub in pubs:
        circuit = pub[0]
        values = pub[2] if len(pub) > 2 else None
        pub_precision = pub[3] if len(pub) > 3 and pub[3] else precision
        shots = math.ceil(1 / pub_precision**2)
        executions = _bindings(values) * measurement_bases(_observable_terms(pub[1]))
        total += executions * shots * (rep_delay + circuit_seconds(circuit, target))
    return total


def _observable_terms(observables: Any) -> list[dict[str, float]]:
    from qiskit.primitives.containers.observables_array import ObservablesArray

    flat = ObservablesArray.coerce(observables).ravel().tolist()
    return flat if isinstance(flat, list) else [flat]


def job_qpu_seconds(
    program_id: str,
    params: dict[str, Any],
    configuration: Mapping[str, Any],
    target: Target,
    *,
    default_shots: int,
    default_precision: float,
) -> float | None:
    """QPU seconds (no overhead) of a sampler or estimator job's decoded ``params``; ``None`` for
    other programs and for PUBs this model cannot read (the caller falls back)."""
    raw_options = params.get("options")
    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
    rep_delay = rep_delay_seconds(configuration, options)
    pubs = [list(p) if isinstance(p, (list, tuple)) else [p] for p in params.get("pubs") or []]
    try:
        if program_id == "sampler":
            shots = options.get("default_shots") or default_shots
            return sampler_seconds(pubs, int(shots), target, rep_delay)
        if program_id == "estimator":
            precision = options.get("default_precision")
            if precision is None and options.get("default_shots"):
                precision = 1 / math.sqrt(options["default_shots"])
            return estimator_seconds(pubs, float(precision or default_precision), target, rep_delay)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError):
        return None
    return None
