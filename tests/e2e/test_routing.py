"""Jobs routed by size with the real client: the API and two worker processes on the real Redis,
one CPU-class, one consuming the GPU-class queue while computing on the CPU
(``QRS_QUEUE_CLASS=gpu``), standing in for a GPU worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_aer.noise import NoiseModel

from tests.conftest import Deployment, ServerProcess, free_port, server_env, wait_ready
from tests.e2e.helpers import wait_until

SENT = "sent to the GPU-class queue"


@pytest.fixture
def two_pools(real_redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    port = free_port()
    # A short lease: a lost worker leaves the registry within 3 s.
    env = server_env(port, REDIS_URL=real_redis_url, QRS_QUEUE_NAME=f"qrs:test-routing:{port}", QRS_JOB_LEASE="3")
    api = ServerProcess(["api"], env, tmp_path / "api.log").start()
    cpu = ServerProcess(["worker"], {**env, "QRS_WORKER_ID": "cpu-1", "QRS_QUEUE_CLASS": "cpu"}, tmp_path / "cpu.log")
    gpu = ServerProcess(["worker"], {**env, "QRS_WORKER_ID": "gpu-1", "QRS_QUEUE_CLASS": "gpu"}, tmp_path / "gpu.log")
    base = f"http://127.0.0.1:{port}"
    cpu.start()
    gpu.start()
    try:
        wait_ready(base, api)
        yield Deployment(base, {"api": api, "cpu": cpu, "gpu": gpu})
    finally:
        for proc in (gpu, cpu, api):
            proc.stop()


def queues(base: str) -> dict[str, str]:
    """This test's workers and their queues (other tests' workers share the Redis registry)."""
    workers = httpx.get(f"{base}/workers").json()["workers"]
    return {w["id"]: w["queue"] for w in workers if w["id"] in ("cpu-1", "gpu-1")}


def wide(backend) -> QuantumCircuit:  # type: ignore[no-untyped-def]
    qc = QuantumCircuit(14)
    qc.h(0)
    for q in range(13):
        qc.cx(q, q + 1)
        qc.t(q + 1)
    qc.measure_all()
    return generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)


def test_wide_jobs_run_on_the_gpu_class_pool_and_on_cpu_once_it_is_gone(
    two_pools: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in two_pools.client_env().items():
        monkeypatch.setenv(key, value)
    from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2

    wait_until(lambda: len(queues(two_pools.base)) == 2, 60, "both workers registered")
    assert sorted(queues(two_pools.base).values())[1].endswith(":gpu")
    time.sleep(1.5)  # past the workers' one-second cache of the registry
    backend = QiskitRuntimeService().backend("fake_guadalupe")
    sampler = SamplerV2(mode=backend)
    sampler.options.simulator.noise_model = NoiseModel()  # ideal: a wide job still runs fast on a CPU
    circuit = wide(backend)
    job = sampler.run([circuit], shots=300)
    assert sum(job.result()[0].data.meas.get_counts().values()) == 300
    assert job.metrics()["worker_id"] == "gpu-1"  # forwarded by cpu-1, or taken by the idle gpu-1
    small = [sampler.run([circuit], shots=10) for _ in range(4)]
    assert all(sum(j.result()[0].data.meas.get_counts().values()) == 10 for j in small)

    two_pools.processes["gpu"].kill()  # the GPU worker is lost: its heartbeat expires after one lease
    wait_until(lambda: list(queues(two_pools.base)) == ["cpu-1"], 30, "gpu-1 gone")
    time.sleep(1.5)
    job = sampler.run([circuit], shots=300)
    assert sum(job.result(timeout=120)[0].data.meas.get_counts().values()) == 300
    assert job.metrics()["worker_id"] == "cpu-1"
    assert SENT not in job.logs()
