"""Circuits and polling shared by the end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager

# 12 qubits in one entangled chain (independent groups would run apart, in milliseconds) with
# non-Clifford rotations under the backend's noise: tens of seconds of Aer time for 1000 shots,
# far longer than any test waits, so it is running when we cancel it.
LONG_SHOTS = 1000


def long_circuit(backend) -> QuantumCircuit:  # type: ignore[no-untyped-def]
    qc = QuantumCircuit(12)
    for layer in range(20):
        for q in range(12):
            qc.rx(0.1 * (layer + 1), q)
        for q in range(11):
            qc.cx(q, q + 1)
    qc.measure_all()
    return generate_preset_pass_manager(backend=backend, optimization_level=0).run(qc)


def bell(backend) -> QuantumCircuit:  # type: ignore[no-untyped-def]
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)


def wait_until(condition: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    """Poll ``condition`` every 0.1 s; fail after ``timeout`` seconds (a hang guard, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
