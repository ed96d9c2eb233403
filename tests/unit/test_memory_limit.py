"""A job that needs more memory than ``QRS_JOB_MEMORY_LIMIT`` fails with a reason; the simulation
process survives it and runs the next job."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit_ibm_runtime import RuntimeEncoder

from qiskit_runtime_server.shared.job_limits import JobLimits
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import Defaults, ExecutionRequest
from qiskit_runtime_server.worker.runner import ProgramRunner


def sampler_request(job_id: str, shots: int) -> ExecutionRequest:
    qc = QuantumCircuit(5, 5)
    qc.sx(range(5))  # uniform outcomes in fake_manila's own gates (PUBs must be ISA)
    qc.measure(range(5), range(5))
    params = {"pubs": [(qc, np.array([]), shots)], "options": {"simulator": {"seed_simulator": 1}}, "version": 2}
    return ExecutionRequest(
        job_id=job_id,
        program_id="sampler",
        backend="fake_manila",
        params=json.dumps(params, cls=RuntimeEncoder).encode(),
        defaults=Defaults(max_shots=10**9),
        # Past the job-size bound too: this test is about the memory limit behind it.
        limits=JobLimits(max_job_shots=10**9),
    )


async def test_over_the_memory_limit_fails_the_job_not_the_process() -> None:
    runner = ProgramRunner(memory_limit_mb=256)
    try:
        # 5 qubits x 10^9 shots of measured bits cannot fit in 256 MiB more than the process holds.
        with pytest.raises(ProgramError, match="memory"):
            await runner.run(sampler_request("big", 10**9))
        outcome = await runner.run(sampler_request("small", 100))
        assert outcome.num_pubs == 1
    finally:
        await runner.close()
