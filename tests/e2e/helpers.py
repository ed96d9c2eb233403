"""Circuits and polling shared by the end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
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


def occupy_every_worker(base: str, submit: Callable[[], Any]) -> list[Any]:
    """Jobs from ``submit`` (long ones) running on every worker of the deployment, so that the
    next job waits in the queue: the all-in-one server runs one worker per core (QRS_WORKERS).

    The workers are those of the first job's worker's queue in ``/workers`` (the registry also
    lists other deployments' workers on a shared Redis).
    """
    jobs = [submit()]
    wait_until(lambda: jobs[0].status() == "RUNNING", what="the long job to start")
    worker = jobs[0].metrics()["worker_id"]
    entries = httpx.get(f"{base}/workers", timeout=5).json()["workers"]
    queue = next(entry["queue"] for entry in entries if entry["id"] == worker)
    jobs += [submit() for entry in entries if entry["queue"] == queue and entry["id"] != worker]
    wait_until(lambda: all(job.status() == "RUNNING" for job in jobs), what="a long job on every worker")
    return jobs
