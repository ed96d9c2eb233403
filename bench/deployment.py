"""Deployment figures: jobs/s with 1 and 2 workers, and how long a killed worker's job takes
to run again elsewhere.

    python -m bench.deployment [--jobs 40] [--lease 15]

Starts its own ``redis-server`` (AOF on, temporary folder), one ``qiskit-runtime-server api``
and the workers as processes, exactly like ``tests/e2e/test_deployment.py``; the unmodified
client submits every job. Throughput: ``--jobs`` small Sampler jobs (one layer of RX and CX on
the 5 qubits of fake_manila, 100 shots) are queued before the workers start, and the rate is
taken from the records, first start to last finish (each worker's first, cache-warming job is
left out).
Recovery: a ~4 s job is started, the worker running it gets SIGKILL, and the script reports the
time until the job is running on the other worker and until its result is back.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import msgspec
import redis as redis_sync

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from tests.conftest import Deployment, ServerProcess, free_port, server_env, wait_ready
from tests.e2e.test_deployment import RedisServer, circuit, sampler, wait_for, workers_view

warnings.filterwarnings("ignore")


def start(folder: Path, workers: int, lease: float) -> tuple[Deployment, RedisServer]:
    redis = RedisServer(folder).start()
    port = free_port()
    env = server_env(port, REDIS_URL=redis.url, QRS_JOB_LEASE=str(lease), QRS_LOG_LEVEL="WARNING")
    deployment = Deployment(f"http://127.0.0.1:{port}", {"api": ServerProcess(["api"], env, folder / "api.log")})
    deployment.redis = redis  # type: ignore[attr-defined]
    deployment.env = env  # type: ignore[attr-defined]
    deployment.processes["api"].start()
    wait_ready(deployment.base, deployment.processes["api"])
    add_workers(deployment, folder, workers)
    return deployment, redis


def add_workers(deployment: Deployment, folder: Path, workers: int) -> None:
    for i in range(workers):
        name = f"w{i + 1}"
        env = {**deployment.env, "QRS_WORKER_ID": name}  # type: ignore[attr-defined]
        deployment.processes[name] = ServerProcess(["worker"], env, folder / f"{name}.log").start()
    wait_for(lambda: len(workers_view(deployment)) == workers, 120, f"{workers} workers")


def stop(deployment: Deployment, redis: RedisServer) -> None:
    for proc in deployment.processes.values():
        proc.stop()
    redis.kill()


def service(deployment: Deployment):  # type: ignore[no-untyped-def]
    os.environ.update(deployment.client_env())
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService()


def throughput(workers: int, jobs: int, lease: float) -> float:
    """Jobs/s executed: all jobs are queued first, then the workers start; first start to last finish.

    Queuing first keeps the client's submission rate (one POST at a time) out of the figure.
    The first job of each worker builds its noise model and is left out.
    """
    with tempfile.TemporaryDirectory() as folder:
        deployment, redis = start(Path(folder), 0, lease)
        store = redis_sync.Redis.from_url(redis.url)
        try:
            client = service(deployment)
            isa = circuit(client)
            run = sampler(client).run
            submitted = [run([isa], shots=100) for _ in range(jobs + workers)]
            add_workers(deployment, Path(folder), workers)
            for job in submitted:
                job.result()
            records = [msgspec.json.decode(store.get(keys.job(j.job_id())), type=JobRecord) for j in submitted]
            records.sort(key=lambda r: r.running or 0)
            firsts = {r.worker_id: r for r in reversed(records)}  # each worker's first job
            timed = [r for r in records if r not in firsts.values()]
            busy = max(r.finished or 0 for r in timed) - min(r.running or 0 for r in timed)
            return len(timed) / busy
        finally:
            stop(deployment, redis)


def recovery(lease: float) -> tuple[float, float]:
    """(seconds from the kill until the job runs again elsewhere, and until its result)."""
    with tempfile.TemporaryDirectory() as folder:
        deployment, redis = start(Path(folder), 2, lease)
        store = redis_sync.Redis.from_url(redis.url)

        def record(job_id: str) -> JobRecord:
            return msgspec.json.decode(store.get(keys.job(job_id)), type=JobRecord)

        try:
            client = service(deployment)
            job = sampler(client).run([circuit(client, 1500)], shots=100)
            job_id = job.job_id()
            wait_for(lambda: record(job_id).status == JobStatus.RUNNING, 120, "the job to start")
            time.sleep(0.5)
            deployment.processes[record(job_id).worker_id or ""].kill()
            killed = time.perf_counter()
            wait_for(lambda: record(job_id).attempts == 2, 600, "the job to run again")
            again = time.perf_counter() - killed
            job.result()
            return again, time.perf_counter() - killed
        finally:
            stop(deployment, redis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--lease", type=float, default=15.0, help="QRS_JOB_LEASE, seconds")
    args = parser.parse_args()
    rates = [throughput(workers, args.jobs, args.lease) for workers in (1, 2)]
    print(
        f"{args.jobs} small jobs queued: 1 worker {rates[0]:.2f} jobs/s, 2 workers {rates[1]:.2f} jobs/s "
        f"({rates[1] / rates[0]:.2f}x)"
    )
    again, done = recovery(args.lease)
    print(
        f"kill -9 of a busy worker (lease {args.lease:g} s): job running again on the other worker after "
        f"{again:.1f} s, result after {done:.1f} s"
    )


if __name__ == "__main__":
    main()
