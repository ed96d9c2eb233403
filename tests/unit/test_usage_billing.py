"""Usage is simulation time: a backend's set-up (noise model, fake backend, catalogue) is not billed.

A fresh simulation process builds a backend's noise model on its first job there (seconds for a
large device); ``execute`` builds it before the job's clock starts, so that first job bills what
an identical second job bills, not the set-up.
"""

from __future__ import annotations

import json
import time

import numpy as np
from qiskit import QuantumCircuit
from qiskit_ibm_runtime import RuntimeEncoder

from qiskit_runtime_server.worker.engines.aer import backend_noise_model, fake_backend
from qiskit_runtime_server.worker.jobspec import ExecutionRequest
from qiskit_runtime_server.worker.runner import ProgramRunner

BACKEND = "fake_kolkata"  # 27 qubits: a noise model that takes a noticeable time to build


def sampler_request(job_id: str) -> ExecutionRequest:
    qc = QuantumCircuit(2, 2)
    qc.sx([0, 1])
    qc.measure([0, 1], [0, 1])
    params = {"pubs": [(qc, np.array([]), 1000)], "options": {"simulator": {"seed_simulator": 1}}, "version": 2}
    return ExecutionRequest(
        job_id=job_id, program_id="sampler", backend=BACKEND, params=json.dumps(params, cls=RuntimeEncoder).encode()
    )


def set_up_seconds() -> float:
    """What building the backend's noise model from nothing takes in this process."""
    fake_backend.cache_clear()
    backend_noise_model.cache_clear()
    start = time.perf_counter()
    backend_noise_model(BACKEND)
    return time.perf_counter() - start


async def test_first_job_on_a_backend_bills_its_simulation_not_the_set_up() -> None:
    runner = ProgramRunner()  # nothing preloaded: the first job is the one that builds the noise model
    try:
        first = await runner.run(sampler_request("first"))
        second = await runner.run(sampler_request("second"))
    finally:
        await runner.close()
    set_up = set_up_seconds()
    assert 0 < first.quantum_seconds < set_up / 3, (first.quantum_seconds, set_up)
    assert first.quantum_seconds < second.quantum_seconds + 0.1, (first.quantum_seconds, second.quantum_seconds)
