"""GET /jobs latency with many jobs stored (default 100,000), through the real API app.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/3 python -m bench.listing [--jobs 100000] [--repeat 50]

Fills the Redis database at BENCH_REDIS_URL (it is FLUSHED first: use a database of your own)
with synthetic job records and their indexes, written exactly as ``JobStore.create`` writes them,
then times ``GET /jobs`` requests through the Starlette app in process (HTTP parsing, auth,
index query, record fetch and JSON encoding; no network). Prints median and p95 per query.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

import httpx
import msgspec
from redis.asyncio import Redis

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.shared import job_index, keys
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import connect
from qiskit_runtime_server.shared.settings import load_settings

INSTANCE = "crn:v1:bluemix:public:quantum-computing:us-east:a/bench:bench::"
BACKENDS = ["fake_manila", "fake_lima", "fake_sherbrooke", "fake_kyiv", "fake_torino"]
TAGS = [f"tag{i}" for i in range(20)]


async def fill(redis: Redis, count: int) -> float:
    """Write ``count`` jobs over the last 30 days; 2% still pending. Returns the oldest time."""
    rng = random.Random(1)
    encode = msgspec.json.Encoder().encode
    start = time.time() - 30 * 86400
    for first in range(0, count, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + 1000, count)):
                record = JobRecord(
                    id=f"bench{i:08d}",
                    program_id=rng.choice(["sampler", "estimator"]),
                    backend=rng.choice(BACKENDS),
                    instance=INSTANCE,
                    created=start + i * (30 * 86400 / count),
                    status=JobStatus.QUEUED if rng.random() < 0.02 else JobStatus.COMPLETED,
                    tags=sorted(rng.sample(TAGS, rng.randint(0, 3))),
                    session_id=f"sess{i // 100:05d}" if rng.random() < 0.3 else None,
                    quantum_seconds=0.05,
                )
                pipe.set(keys.job(record.id), encode(record))
                pipe.set(keys.job_params(record.id), b"{}")
                job_index.add_commands(pipe, record)
            await pipe.execute()
    return start


QUERIES: list[tuple[str, dict[str, object]]] = [
    ("newest 20 (client default)", {}),
    ("limit=1000", {"limit": 1000}),
    ("offset=50000", {"offset": 50000}),
    ("backend", {"backend": "fake_kyiv"}),
    ("pending=true", {"pending": "true"}),
    ("pending=false&backend", {"pending": "false", "backend": "fake_lima"}),
    ("tags (2)", {"tags": ["tag3", "tag7"]}),
    ("session_id", {"session_id": "sess00042"}),
    ("backend+program+tag+created range", {"backend": "fake_manila", "program": "sampler", "tags": "tag1"}),
    ("sort=ASC", {"sort": "ASC"}),
]


async def measure(redis_url: str, repeat: int, start: float) -> None:
    settings = load_settings({}, redis_url=redis_url)
    pool = await connect(redis_url)
    app = create_app(settings, pool)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope, receive, send):  # type: ignore[no-untyped-def]
            scope["state"] = dict(state)
            await app(scope, receive, send)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=with_state), base_url="http://b") as http:
            token = (await http.post("/identity/token", data={"apikey": "bench"})).json()["access_token"]
            http.headers.update({"Authorization": f"Bearer {token}", "Service-CRN": INSTANCE})
            window = {
                "created_after": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + 10 * 86400)),
                "created_before": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + 20 * 86400)),
            }
            print(f"{'query':40} {'count':>7} {'jobs':>5} {'median ms':>10} {'p95 ms':>8}")
            for name, params in QUERIES:
                params = {"exclude_params": "true", **params}
                if "created range" in name:
                    params.update(window)
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    response = await http.get("/api/v1/jobs", params=params)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.text
                body = response.json()
                p95 = sorted(times)[int(0.95 * (len(times) - 1))]
                median = statistics.median(times)
                print(f"{name:40} {body['count']:>7} {len(body['jobs']):>5} {median:>10.2f} {p95:>8.2f}")
    await pool.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    url = os.environ.get("BENCH_REDIS_URL")
    if not url:
        raise SystemExit("set BENCH_REDIS_URL to a Redis database that may be flushed")
    redis = Redis.from_url(url)
    await redis.flushdb()
    t0 = time.perf_counter()
    start = await fill(redis, args.jobs)
    elapsed = time.perf_counter() - t0
    print(f"stored {args.jobs} jobs in {elapsed:.1f} s; Redis used_memory (whole server) {await _memory(redis)}")
    await redis.aclose()
    await measure(url, args.repeat, start)


async def _memory(redis: Redis) -> str:
    info = await redis.info("memory")
    return str(info.get("used_memory_human"))


if __name__ == "__main__":
    asyncio.run(main())
