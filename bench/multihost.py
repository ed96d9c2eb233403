"""Throughput and latency across hosts: Redis, the API, the client and up to 4 workers each in a
network namespace of their own (``tests/e2e/netlab.py``), with and without 50 ms of one-way
latency between the workers and Redis.

    sudo python -m bench.multihost [--jobs 40] [--delay 50]

Throughput: ``--jobs`` small Sampler jobs (Bell, 100 shots, fake_manila) are queued by the
unmodified client before the workers start; jobs/s is taken from the records, first start to
last finish, each worker's first (cache-warming) job left out; 1, 2 and 4 workers, each on its
own host. Latency (1 worker): the client's time from ``sampler.run`` to the result for one
small job, median of ``--probes``, with the status hold (``QRS_STATUS_HOLD=1``, the default: the
API answers the client's first poll as soon as the job is final) and without it (0: the client's
poll schedule decides), and the time from the record's creation to ``Running`` (the doorbell:
the API publishes ``qrs:enqueued`` and the idle worker's claim starts at once, across the
network). Needs root (``ip netns``); the delay is ``tc netem`` where the kernel has it, else the
lab's relay (same added round-trip time).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import msgspec
import redis as redis_sync

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.models import JobRecord
from tests.conftest import ROOT, Deployment, server_env
from tests.e2e.helpers import bell
from tests.e2e.netlab import Lab, unusable_reason

warnings.filterwarnings("ignore")
WORKERS = ["w1", "w2", "w3", "w4"]
PYTHON = [sys.executable, "-m", "qiskit_runtime_server"]


class Hosts:
    """The lab with Redis running; the API and workers are (re)started per measurement."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        redis = lab.addr["redis"]
        lab.popen(
            "redis",
            ["redis-server", "--bind", redis, "--port", "6379", "--save", "", "--protected-mode", "no"],
            "redis.log",
        )
        self.api_url = f"http://{lab.addr['api']}:8000"
        self.env = server_env(
            8000,
            REDIS_URL=f"redis://{redis}:6379/0",
            QRS_HOST=lab.addr["api"],
            QRS_PUBLIC_URL=self.api_url,
            QRS_LOG_LEVEL="WARNING",
            PYTHONPATH=str(ROOT),
        )
        self.worker_urls = {name: lab.redis_url_for(name, "redis") for name in WORKERS}
        self.running: list[subprocess.Popen[bytes]] = []

    def start_api(self, hold: float) -> None:
        self.running.append(
            self.lab.popen("api", [*PYTHON, "api"], "api.log", {**self.env, "QRS_STATUS_HOLD": str(hold)})
        )
        with self.lab.entered("client"):
            _wait(lambda: httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200, 60)

    def start_workers(self, count: int) -> None:
        for name in WORKERS[:count]:
            env = {**self.env, "REDIS_URL": self.worker_urls[name], "QRS_WORKER_ID": name}
            self.running.append(self.lab.popen(name, [*PYTHON, "worker"], f"{name}.log", env))

    def stop_all(self) -> None:
        for proc in self.running:
            proc.terminate()
        for proc in self.running:
            proc.wait(timeout=30)
        self.running.clear()
        with self.lab.entered("client"):
            redis_sync.Redis(host=self.lab.addr["redis"]).flushdb()

    def records(self, job_ids: list[str]) -> list[JobRecord]:
        with self.lab.entered("client"):
            store = redis_sync.Redis(host=self.lab.addr["redis"])
            return [msgspec.json.decode(store.get(keys.job(j)) or b"", type=JobRecord) for j in job_ids]

    def client(self):  # type: ignore[no-untyped-def]
        import os

        os.environ.update(Deployment(self.api_url, {}).client_env())
        from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2

        with self.lab.entered("client"):
            service = QiskitRuntimeService()
            backend = service.backend("fake_manila")
            return SamplerV2(mode=backend), bell(backend)


def _wait(check, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, redis_sync.RedisError):
            pass
        time.sleep(0.2)
    raise RuntimeError("timed out")


def throughput(hosts: Hosts, workers: int, jobs: int) -> float:
    hosts.start_api(1.0)
    try:
        sampler, circuit = hosts.client()
        with hosts.lab.entered("client"):
            submitted = [sampler.run([circuit], shots=100) for _ in range(jobs + workers)]
            hosts.start_workers(workers)
            for job in submitted:
                job.result()
        records = sorted(hosts.records([j.job_id() for j in submitted]), key=lambda r: r.running or 0)
        firsts = {r.worker_id: r for r in reversed(records)}
        timed = [r for r in records if r not in firsts.values()]
        return len(timed) / (max(r.finished or 0 for r in timed) - min(r.running or 0 for r in timed))
    finally:
        hosts.stop_all()


def latency(hosts: Hosts, hold: float, probes: int) -> tuple[float, float]:
    """(median client seconds from run() to result, median seconds from created to Running)."""
    hosts.start_api(hold)
    hosts.start_workers(1)
    try:
        sampler, circuit = hosts.client()
        with hosts.lab.entered("client"):
            sampler.run([circuit], shots=100).result()  # warm the worker
            ends, ids = [], []
            for _ in range(probes):
                started = time.perf_counter()
                job = sampler.run([circuit], shots=100)
                job.result()
                ends.append(time.perf_counter() - started)
                ids.append(job.job_id())
        pickups = [(r.running or 0) - r.created for r in hosts.records(ids)]
        return statistics.median(ends), statistics.median(pickups)
    finally:
        hosts.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--delay", type=int, default=50, help="ms of one-way latency, workers to Redis")
    args = parser.parse_args()
    reason = unusable_reason()
    if reason:
        sys.exit(f"cannot build the hosts: {reason}")
    with tempfile.TemporaryDirectory() as folder, Lab(["redis", "api", "client", *WORKERS], Path(folder)) as lab:
        hosts = Hosts(lab)
        print(f"latency via {lab.delay_method}; {args.jobs} small jobs per throughput run")
        for delay in (0, args.delay):
            for name in WORKERS:
                lab.delay(name, delay)
            rates = {n: throughput(hosts, n, args.jobs) for n in (1, 2, 4)}
            print(f"delay {delay} ms: " + ", ".join(f"{n} worker(s) {rate:.1f} jobs/s" for n, rate in rates.items()))
            for hold in (1.0, 0.0):
                end, pickup = latency(hosts, hold, args.probes)
                print(
                    f"delay {delay} ms, QRS_STATUS_HOLD={hold:g}: result after {end * 1000:.0f} ms "
                    f"(median), queued to running {pickup * 1000:.1f} ms"
                )


if __name__ == "__main__":
    main()
