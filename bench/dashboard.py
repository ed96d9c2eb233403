"""Dashboard benchmarks: endpoint latency with 100,000 jobs, wait-estimate error, live-update
latency and the memory of open WebSocket connections.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/3 python -m bench.dashboard [--jobs 100000] [--repeat 40]

The Redis database at BENCH_REDIS_URL is FLUSHED first: use a database of your own.

1. ``fill``: ``--jobs`` jobs over the last 30 days, written with the store's own index and
   stats hooks (``job_index.add_commands``, ``stats.record_created``/``record_change``; the
   change times backdated), 2 % still queued or running, 5 % failed, three instances.
2. Every ``/dashboard/api`` endpoint through the Starlette app in process (auth, Redis, JSON;
   no network), ``--repeat`` times each: median and p95. Target p95 <= 50 ms.
3. Wait estimates: a discrete-event simulation of W workers taking jobs FIFO from one queue
   (Poisson arrivals at 85 % load, per-backend log-normal running times); at each submission
   ``estimates.estimate`` is given the live queue and the latest 50 running times, and is
   compared with the wait the job then has. Prints median absolute error and the share of
   estimates within 50 % (or 1 s) of the actual wait.
4. Live latency: ``qiskit-runtime-server api`` on that Redis, one WebSocket client; the time
   from a job state change (``JobStore`` transaction, in this process) to its event arriving.
   Target <= 500 ms.
5. Memory: the API process's RSS before and after opening 200 WebSocket connections (each
   past its hello). Target <= 50 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
from redis.asyncio import Redis

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.api.dashboard.estimates import estimate
from qiskit_runtime_server.shared import job_index, keys, stats
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import connect
from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.shared.store import JobStore

INSTANCES = [f"crn:v1:bluemix:public:quantum-computing:us-east:a/bench:inst{i}::" for i in range(3)]
BACKENDS = ["fake_manila", "fake_lima", "fake_sherbrooke", "fake_kyiv", "fake_torino"]


async def fill(redis: Redis, count: int) -> None:
    """Write ``count`` jobs with their indexes and dashboard aggregates (see the module docstring)."""
    rng = random.Random(1)
    encode = msgspec.json.Encoder().encode
    start = time.time() - 30 * 86400
    for first in range(0, count, 500):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + 500, count)):
                created = start + i * (30 * 86400 / count)
                queued = JobRecord(
                    id=f"dash{i:08d}",
                    program_id=rng.choice(["sampler", "estimator"]),
                    backend=rng.choice(BACKENDS),
                    instance=rng.choice(INSTANCES),
                    created=created,
                    tags=[f"tag{rng.randint(0, 9)}"],
                )
                job_index.add_commands(pipe, queued)
                stats.record_created(pipe, queued)
                record = queued
                if rng.random() > 0.01:
                    running = created + rng.expovariate(1 / 2.0)
                    record = msgspec.structs.replace(
                        queued, status=JobStatus.RUNNING, running=running, worker_id=f"w{i % 4}", attempts=1
                    )
                    stats.record_change(pipe, queued, record, now=running)
                    if rng.random() > 0.01:
                        finished = running + rng.lognormvariate(0, 1)
                        status = JobStatus.FAILED if rng.random() < 0.05 else JobStatus.COMPLETED
                        final = msgspec.structs.replace(
                            record, status=status, finished=finished, quantum_seconds=finished - running
                        )
                        job_index.update_commands(pipe, record, final)
                        stats.record_change(pipe, record, final, now=finished)
                        record = final
                pipe.set(keys.job(record.id), encode(record))
                pipe.set(keys.job_params(record.id), b'{"options": {}}')
            await pipe.execute()


ENDPOINTS = [
    "/dashboard/api/overview",
    "/dashboard/api/trends?unit=hour&count=24",
    "/dashboard/api/trends?unit=day&count=30",
    "/dashboard/api/status-distribution",
    "/dashboard/api/backends?days=1",
    "/dashboard/api/backends?days=30",
    "/dashboard/api/queue",
    "/dashboard/api/percentiles?days=7",
    "/dashboard/api/usage",
    "/dashboard/api/workers",
    "/dashboard/api/jobs",
    "/dashboard/api/jobs?status=Failed&backend=fake_kyiv",
    f"/dashboard/api/jobs?instance={INSTANCES[0]}&status=Completed&tag=tag3",
    "/dashboard/api/jobs/dash00050000",
    "/api/v1/backends/fake_manila/status",
]


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


async def measure_endpoints(redis_url: str, repeat: int) -> list[tuple[str, float, float]]:
    pool = await connect(redis_url)
    app = create_app(load_settings({"REDIS_URL": redis_url}), pool)
    rows = []
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope, receive, send):  # type: ignore[no-untyped-def]
            scope["state"] = dict(state)
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            token = (await http.post("/identity/token", data={"apikey": "k"})).json()["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
            for path in ENDPOINTS:
                times = []
                for _ in range(repeat + 2):
                    t0 = time.perf_counter()
                    response = await http.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, (path, response.text[:200])
                times = times[2:]  # warm-up
                rows.append((path, statistics.median(times), _p95(times)))
    await pool.aclose()
    return rows


def simulate_estimates(jobs: int = 4000, workers: int = 4, load: float = 0.85, seed: int = 2) -> dict[str, float]:
    """Section 3 of the module docstring; returns the error statistics (seconds)."""
    rng = random.Random(seed)
    medians = {"fake_manila": 0.05, "fake_lima": 0.2, "fake_sherbrooke": 2.0, "fake_kyiv": 1.0, "fake_torino": 4.0}
    mean_run = statistics.fmean(m * 1.13 for m in medians.values())  # log-normal sigma 0.5: mean = 1.13 median
    rate = load * workers / mean_run
    free = [0.0] * workers  # when each worker is next free
    scheduled: list[tuple[float, float, str]] = []  # (end, start, backend) of jobs not ended, a heap
    runs: dict[str, list[float]] = {b: [] for b in medians}
    errors: list[float] = []
    waits: list[float] = []
    ok = 0
    now = 0.0
    for _ in range(jobs):
        now += rng.expovariate(rate)
        while scheduled and scheduled[0][0] <= now:  # ended: their running times are now known
            end, start, backend = heapq.heappop(scheduled)
            runs[backend].insert(0, end - start)
            del runs[backend][stats.RECENT_RUNS :]
        queued: dict[str, int] = {}
        active: dict[str, int] = {}
        for _end, start, backend in scheduled:
            target = queued if start > now else active
            target[backend] = target.get(backend, 0) + 1
        predicted = estimate(queued, active, runs, workers).wait_seconds or 0.0
        backend = rng.choice(list(medians))
        duration = rng.lognormvariate(0, 0.5) * medians[backend]
        index = min(range(workers), key=free.__getitem__)  # FIFO: the first worker to be free takes it
        start = max(now, free[index])
        free[index] = start + duration
        heapq.heappush(scheduled, (start + duration, start, backend))
        actual = start - now
        waits.append(actual)
        errors.append(abs(predicted - actual))
        ok += abs(predicted - actual) <= max(1.0, 0.5 * actual)
    return {
        "jobs": jobs,
        "workers": workers,
        "load": load,
        "mean_actual_wait_s": round(statistics.fmean(waits), 3),
        "median_abs_error_s": round(statistics.median(errors), 3),
        "p90_abs_error_s": round(sorted(errors)[int(len(errors) * 0.9)], 3),
        "within_50pct_or_1s": round(ok / jobs, 3),
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure_live(redis_url: str, samples: int, connections: int) -> dict[str, float]:
    """Sections 4 and 5: a real API process; latency of state changes and RSS of open sockets."""
    import websockets

    port = int(os.environ.get("BENCH_PORT", "18931"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRS_")}
    env.update({"REDIS_URL": redis_url, "QRS_PORT": str(port), "QRS_MAX_CONNECTIONS": "2000"})
    proc = subprocess.Popen([sys.executable, "-m", "qiskit_runtime_server", "api"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    out: dict[str, float] = {}
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        url = f"ws://127.0.0.1:{port}/dashboard/ws"
        pool = await connect(redis_url)
        store = JobStore(pool)
        latencies = []
        async with websockets.connect(url) as ws:
            await ws.send("{}")
            await ws.recv()
            for i in range(samples):
                record = JobRecord(id=f"live{i:06d}", program_id="sampler", backend="fake_manila",
                                   instance=INSTANCES[0], created=time.time())  # fmt: skip
                t0 = time.perf_counter()
                await store.create(record, b"{}")
                while json.loads(await ws.recv())["job"]["id"] != record.id:
                    pass
                latencies.append((time.perf_counter() - t0) * 1000)
                await store.cancel(record.id)
                await ws.recv()
        out["live_median_ms"] = statistics.median(latencies)
        out["live_p95_ms"] = _p95(latencies)
        await asyncio.sleep(0.5)
        before = _rss_mb(proc.pid)
        sockets = []
        for _ in range(connections):
            ws = await websockets.connect(url)
            await ws.send("{}")
            await ws.recv()
            sockets.append(ws)
        await asyncio.sleep(1.0)
        out["rss_before_mb"] = before
        out["rss_with_connections_mb"] = _rss_mb(proc.pid)
        for ws in sockets:
            await ws.close()
        await pool.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--live-samples", type=int, default=100)
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    url = os.environ.get("BENCH_REDIS_URL")
    if not url:
        raise SystemExit("set BENCH_REDIS_URL to a Redis database that may be flushed")
    redis = Redis.from_url(url)
    await redis.flushdb()
    t0 = time.perf_counter()
    await fill(redis, args.jobs)
    print(f"filled {args.jobs} jobs in {time.perf_counter() - t0:.1f} s")
    print("| endpoint | median ms | p95 ms |\n|---|---|---|")
    for path, median, p95 in await measure_endpoints(url, args.repeat):
        print(f"| `{path}` | {median:.1f} | {p95:.1f} |")
    for load in (0.5, 0.85, 0.95):
        print("wait estimates:", simulate_estimates(load=load))
    print("live:", await measure_live(url, args.live_samples, args.connections))
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
