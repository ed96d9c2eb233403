"""Jobs routed by size between device-class queues, with two CPU worker pools standing in for
the classes (``QRS_QUEUE_CLASS=gpu`` on a CPU worker consumes the GPU-class queue)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import numpy as np
from arq import Worker
from arq.connections import ArqRedis
from qiskit import QuantumCircuit
from qiskit_aer.noise import NoiseModel
from qiskit_ibm_runtime import RuntimeEncoder

from qiskit_runtime_server.shared import workers
from qiskit_runtime_server.shared.aio import cancel_and_wait
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import connect, ring_doorbell
from qiskit_runtime_server.shared.routing import class_queue
from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.worker.app import build_worker
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs.device_class import job_device_class
from tests.unit.conftest import in_process_api

QUEUE = "qrs:test-routing"
GPU_QUEUE = class_queue(QUEUE, "gpu")
INSTANCE = "crn:v1:test:a/acct:one::"
SENT = "sent to the GPU-class queue"


def entangled(width: int, clifford: bool = False) -> QuantumCircuit:
    """A chain of CX over ``width`` qubits (one interacting group), T gates unless ``clifford``."""
    qc = QuantumCircuit(width, width)
    qc.h(0)
    for q in range(width - 1):
        qc.cx(q, q + 1)
        if not clifford:
            qc.t(q + 1)
    qc.measure(range(width), range(width))
    return qc


def test_device_class_follows_the_gpu_thresholds() -> None:
    defaults = Defaults()

    def cls(circuit: QuantumCircuit, shots: int, program: str = "sampler") -> str:
        pub = [circuit, np.array([]), shots] if program == "sampler" else [circuit, "Z" * circuit.num_qubits]
        return job_device_class(program, {"pubs": [pub]}, defaults, 4096)[0]

    assert cls(entangled(5), 4096) == "cpu"  # min(4^5, 4096 * 2^5) = 1024 units, far below 2^22
    assert cls(entangled(14), 300) == "gpu"  # 300 * 2^14 = 4.9e6 >= 2^22
    assert cls(entangled(14), 200) == "cpu"  # 3.3e6 < 2^22
    assert cls(entangled(16, clifford=True), 4096) == "cpu"  # stabilizer, CPU only
    assert cls(entangled(40), 4096) == "cpu"  # wider than a 4 GiB statevector: MPS, CPU only
    assert cls(entangled(14), 4096, program="estimator") == "gpu"  # 4096 shots per basis at precision 1/64
    assert job_device_class("noise-learner", {}, defaults, 4096)[0] == "cpu"


def params(circuit: QuantumCircuit, shots: int) -> bytes:
    # ISA for fake_guadalupe (the worker refuses other circuits before it classifies or runs them).
    # Ideal: the wide jobs finish in well under a second on a CPU.
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_ibm_runtime.fake_provider import FakeGuadalupeV2

    isa = generate_preset_pass_manager(backend=FakeGuadalupeV2(), optimization_level=1, seed_transpiler=1).run(circuit)
    body = {"pubs": [(isa, np.array([]), shots)], "options": {"simulator": {"noise_model": NoiseModel()}}}
    return json.dumps({**body, "version": 2}, cls=RuntimeEncoder).encode()


WIDE = params(entangled(14), 300)
SMALL = params(entangled(3), 100)


async def submit(pool: ArqRedis, job_id: str, body: bytes, queue: str = QUEUE) -> None:
    record = JobRecord(
        id=job_id, program_id="sampler", backend="fake_guadalupe", instance=INSTANCE, created=time.time()
    )
    await JobStore(pool).create(record, body, queue_name=queue)
    await ring_doorbell(pool, queue)


def start(pool: ArqRedis, worker_id: str, queue_class: str) -> tuple[Worker, asyncio.Task[None]]:
    settings = load_settings({}, queue_name=QUEUE, worker_id=worker_id, queue_class=queue_class)
    worker = build_worker(settings, pool, embedded=True)
    return worker, asyncio.create_task(worker.async_run())


async def stop(worker: Worker, task: asyncio.Task[None]) -> None:
    await cancel_and_wait(task)
    await worker.close()


async def until(check: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[misc]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def final(store: JobStore, job_id: str) -> JobRecord:
    async def done() -> bool:
        record = await store.get(job_id)
        return record is not None and record.status.final

    await until(done)
    record = await store.get(job_id)
    assert record is not None
    return record


async def test_wide_jobs_go_to_gpu_class_workers_small_ones_stay_and_nothing_waits_for_a_missing_gpu() -> None:
    pool = await connect(None)
    store = JobStore(pool)
    cpu = start(pool, "cpu-1", "cpu")
    try:
        # A GPU-class worker that is live but busy: the CPU worker forwards wide work to its queue.
        now = time.time()
        busy = workers.WorkerInfo(
            id="gpu-busy", host="h", pid=1, device="GPU", queue=GPU_QUEUE, started=now, heartbeat=now, current_job="x"
        )
        await workers.publish(pool, busy, 60)
        await submit(pool, "wide-1", WIDE)
        await submit(pool, "small-1", SMALL)
        small = await final(store, "small-1")
        assert (small.status, small.worker_id) == (JobStatus.COMPLETED, "cpu-1")

        async def forwarded() -> bool:
            return await pool.zscore(GPU_QUEUE, "wide-1") is not None

        await until(forwarded)
        waiting = await store.get("wide-1")
        assert waiting is not None and waiting.status is JobStatus.QUEUED and waiting.attempts == 0
        assert any(SENT in line and "interacting qubits" in line for line in await store.logs("wide-1"))

        # The GPU-class worker comes up: it runs the forwarded job, as its first attempt.
        gpu = start(pool, "gpu-1", "gpu")
        wide = await final(store, "wide-1")
        assert (wide.status, wide.worker_id, wide.attempts) == (JobStatus.COMPLETED, "gpu-1", 1), wide.reason
        await stop(*gpu)
        await workers.remove(pool, "gpu-busy")
        await asyncio.sleep(1.2)  # past the routers' cache of the registry

        # No GPU-class worker live: wide work runs on the CPU worker, and a job already on the
        # GPU-class queue is taken back by it.
        await submit(pool, "wide-2", WIDE)
        await submit(pool, "wide-3", WIDE, queue=GPU_QUEUE)
        for job_id in ("wide-2", "wide-3"):
            record = await final(store, job_id)
            assert (record.status, record.worker_id) == (JobStatus.COMPLETED, "cpu-1"), (job_id, record.reason)
            assert not any(SENT in line for line in await store.logs(job_id))
    finally:
        await stop(*cpu)


async def test_an_idle_gpu_class_worker_takes_cpu_class_work() -> None:
    pool = await connect(None)
    store = JobStore(pool)
    gpu = start(pool, "gpu-1", "gpu")
    try:
        for i in range(3):
            await submit(pool, f"small-{i}", SMALL)
        for i in range(3):
            record = await final(store, f"small-{i}")
            assert (record.status, record.worker_id) == (JobStatus.COMPLETED, "gpu-1"), record.reason
        assert await pool.zcard(QUEUE) == 0 and await pool.zcard(GPU_QUEUE) == 0
    finally:
        await stop(*gpu)


async def test_metrics_give_each_device_class_queue_length() -> None:
    pool = await connect(None)
    await submit(pool, "wide-1", WIDE, queue=GPU_QUEUE)
    async with in_process_api({"QRS_QUEUE_NAME": QUEUE}, pool) as http:
        text = (await http.get("/metrics")).text
    assert 'qrs_class_queue_length{class="cpu"} 0.0' in text
    assert 'qrs_class_queue_length{class="gpu"} 1.0' in text
