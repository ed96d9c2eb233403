"""One samplex build per distinct boxed circuit in a simulation process, shared between jobs.

The executor Estimator pipeline (``qiskit_mitigation``'s tasks, called by the client's
``executor_estimator.prepare``) boxes each PUB's circuit and hands it to ``samplomatic.build``,
which returns the template circuit and the samplex that draws its twirls. A variational loop
(QAOA, VQE: COBYLA in a Session) sends one circuit many times with new parameter values; split
by light cones, every job has the same pieces, so the same boxed circuits, and the build (a
quarter of a 100-node QAOA evaluation) is the same each time. Parameter values never enter it:
they reach the samplex as its ``parameter_values`` input, drawn per job.

:func:`install` puts :func:`cached_build` in place of the name ``build`` that the task modules
imported from samplomatic, wraps the tasks' boxing (``MitigationTask._box_circuit`` and
``TREX._box_circuit``, a pass manager run per piece: a fifth of an evaluation) in the same kind
of cache, and :func:`start_program` numbers each PUB's change-basis boxes from
zero (``qiskit_mitigation`` 0.1 and samplomatic 0.21, bounded in ``pyproject.toml``; the
contracts are tested in ``tests/unit/test_library_contracts.py``). The key is the circuit's
structure (``engines/circuit_key.py``); a circuit it cannot key (control flow, unknown
parameter types) is built afresh every time. The template and samplex are only read after the
build (the dynamical decoupling pass and the engines make new circuits; PEC's noise rates are
samplex arguments), so one copy serves every job; so is the boxed circuit.

Boxing names change-basis boxes from samplomatic's counter, so a boxed circuit is kept with the
counter's value before and after it: the key holds the value before, and a hit moves the counter
to the value after, as the boxing would have. The key also holds the circuit's parameters with
their identities (the boxed circuit carries the objects), and the boxing options.
"""

from __future__ import annotations

import importlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from qiskit.circuit import QuantumCircuit

from qiskit_runtime_server.worker.engines.circuit_key import fingerprint

# Modules of qiskit_mitigation that call ``build`` by the name they imported.
TASK_MODULES = ("qiskit_mitigation.mitigation_task", "qiskit_mitigation.trex", "qiskit_mitigation.pec")
# Builds kept (least recently used dropped first): a 100-node QAOA layer has ~90 pieces, and
# TREX calibration circuits (one per width) come on top.
MAX_ENTRIES = 256

_cache: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
_boxed: OrderedDict[Hashable, tuple[QuantumCircuit, int]] = OrderedDict()
_lock = threading.Lock()
_original: Any = None
# Task classes whose ``_box_circuit`` classmethod is cached: (module, class).
BOXING_CLASSES = (("qiskit_mitigation.mitigation_task", "MitigationTask"), ("qiskit_mitigation.trex", "TREX"))


def cached_build(circuit: QuantumCircuit) -> tuple[Any, Any]:
    """``samplomatic.build(circuit)``: ``(template, samplex)``, from the cache when a circuit of
    the same structure was built before in this process."""
    key = fingerprint(circuit)
    if key is None:
        return _build(circuit)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    built = _build(circuit)
    with _lock:
        _cache[key] = built
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    return built


def _build(circuit: QuantumCircuit) -> tuple[Any, Any]:
    import samplomatic

    template, samplex = (_original or samplomatic.build)(circuit)
    return template, samplex


def _counter() -> int:
    """The next number samplomatic's change-basis counter gives (left unconsumed)."""
    from samplomatic.transpiler.passes.group_meas_into_boxes import GroupMeasIntoBoxes

    value: int = next(GroupMeasIntoBoxes._REF_COUNTER)
    GroupMeasIntoBoxes._REF_COUNTER = itertools.count(value)
    return value


def _set_counter(value: int) -> None:
    from samplomatic.transpiler.passes.group_meas_into_boxes import GroupMeasIntoBoxes

    GroupMeasIntoBoxes._REF_COUNTER = itertools.count(value)


def cached_boxing(boxing: Any) -> Any:
    """A ``_box_circuit(cls, circuit, boxing_options)`` that keeps what ``boxing`` (the task
    class's own function) returns, keyed as the module docstring says."""

    def box_circuit(cls: type, circuit: QuantumCircuit, boxing_options: dict[str, Any] | None) -> QuantumCircuit:
        structure = fingerprint(circuit)
        if structure is None:
            plain: QuantumCircuit = boxing(cls, circuit, boxing_options)
            return plain
        parameters = tuple((p.name, str(p.uuid)) for p in circuit.parameters)
        options = repr(sorted((boxing_options or {}).items()))
        key = (cls.__qualname__, structure, parameters, options, _counter())
        with _lock:
            hit = _boxed.get(key)
            if hit is not None:
                _boxed.move_to_end(key)
                _set_counter(hit[1])
                return hit[0]
        boxed: QuantumCircuit = boxing(cls, circuit, boxing_options)
        with _lock:
            _boxed[key] = (boxed, _counter())
            while len(_boxed) > MAX_ENTRIES:
                _boxed.popitem(last=False)
        return boxed

    box_circuit.__wrapped__ = boxing  # type: ignore[attr-defined]
    return box_circuit


def start_program() -> None:
    """Number the next program's measurement-basis boxes from zero again.

    samplomatic names each change-basis box ``basis{n}`` from one counter per process
    (``GroupMeasIntoBoxes._REF_COUNTER``), and the name is both in the boxed circuit and the
    samplex's input: left running, no two jobs would have the same boxed circuits. Numbered per
    program (one PUB, prepared on its own) they stay distinct within it, where they must (one
    per item), and a loop's jobs repeat the same names PUB by PUB, in whichever process.
    """
    from samplomatic.transpiler.passes.group_meas_into_boxes import GroupMeasIntoBoxes

    GroupMeasIntoBoxes._REF_COUNTER = itertools.count()


def install() -> None:
    """Make the task modules call :func:`cached_build` (idempotent)."""
    global _original
    import samplomatic

    if _original is None:
        _original = samplomatic.build
    for name in TASK_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "build", None) in (samplomatic.build, _original):
            setattr(module, "build", cached_build)  # noqa: B010 (the module's global, on purpose)
    for name, class_name in BOXING_CLASSES:
        task = getattr(importlib.import_module(name), class_name)
        boxing = task.__dict__["_box_circuit"].__func__
        if not hasattr(boxing, "__wrapped__"):
            task._box_circuit = classmethod(cached_boxing(boxing))


def clear() -> None:
    """Forget every build (tests)."""
    with _lock:
        _cache.clear()
        _boxed.clear()


def size() -> int:
    """Builds held now."""
    return len(_cache)


def boxed_size() -> int:
    """Boxed circuits held now."""
    return len(_boxed)
