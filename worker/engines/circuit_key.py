"""A hashable key for a circuit's structure, for caches of work that depends on nothing else.

Two circuits with equal keys have the same instructions in the same order on the same qubit and
clbit indices, the same registers, the same parameters by name and value (numbers, expressions,
arrays), and boxes with equal bodies and equal annotations (samplomatic's annotations compare by
value). Parameter *values* bound later (a sweep, a variational loop) are not part of a circuit,
so a loop's jobs share keys.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit

_IDENTITY_HASH = object.__hash__


class _Uncacheable(Exception):
    pass


def fingerprint(circuit: QuantumCircuit) -> Hashable | None:
    """The key of the module docstring, or ``None`` when the circuit holds something it cannot
    key (control flow, whose conditions refer to bits and variables; parameters that are neither
    numbers, expressions nor arrays; annotations without value semantics)."""
    try:
        return _key(circuit)
    except _Uncacheable:
        return None


def _key(circuit: QuantumCircuit) -> Hashable:
    index = {bit: i for i, bit in enumerate(circuit.qubits)}
    cindex = {bit: i for i, bit in enumerate(circuit.clbits)}
    items: list[Hashable] = []
    for instruction in circuit.data:
        operation = instruction.operation
        name = operation.name
        qubits = tuple(index[q] for q in instruction.qubits)
        clbits = tuple(cindex[c] for c in instruction.clbits)
        if name == "box":
            annotations = tuple(operation.annotations)
            if any(getattr(type(a), "__hash__", None) is _IDENTITY_HASH for a in annotations):
                raise _Uncacheable  # compared by identity: never equal across circuits
            body = _key(operation.blocks[0])
            items.append(("box", qubits, clbits, body, annotations, operation.duration, operation.unit))
        elif getattr(operation, "blocks", None):
            raise _Uncacheable  # control flow: conditions refer to bits and variables
        else:
            params = tuple(_param(p) for p in operation.params)
            unit = operation.unit if name == "delay" else None
            items.append((name, qubits, clbits, params, unit, operation.label))
    return (
        circuit.num_qubits,
        circuit.num_clbits,
        tuple((r.name, r.size) for r in circuit.qregs),
        tuple((r.name, r.size) for r in circuit.cregs),
        _param(circuit.global_phase),
        tuple(items),
    )


def _param(value: Any) -> Hashable:
    if isinstance(value, ParameterExpression):
        return ("expr", str(value))
    if isinstance(value, (bool, int, float, complex, str)):
        return (type(value).__name__, value)
    if isinstance(value, np.number):
        return ("number", value.item())
    if isinstance(value, np.ndarray):
        return ("array", value.shape, str(value.dtype), value.tobytes())
    raise _Uncacheable
