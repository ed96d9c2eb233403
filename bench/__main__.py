"""``python -m bench``: run every benchmark against its baseline in the same run, write RESULTS.md.

Needs a real Redis for the split deployment (``--redis-url``, default database 14 of the local
Redis, flushed first) and ``wrk`` for the API load case.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench import cases
from bench.servers import deployment

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def versions() -> str:
    from importlib.metadata import version

    names = ["qiskit", "qiskit-aer", "qiskit-ibm-runtime", "starlette", "uvicorn", "arq", "redis", "msgspec"]
    return ", ".join(f"{n} {version(n)}" for n in names) + f", Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--repeat", type=int, default=10, help="repetitions of each timed case")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per throughput run")
    parser.add_argument("--memory-jobs", type=int, default=900, help="jobs between the two worker RSS readings")
    args = parser.parse_args()

    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    rows: list[cases.Row] = []
    started = time.time()
    print("status hold ...", flush=True)
    rows += cases.status_hold(args.repeat)
    with deployment(args.redis_url, workers=1) as dep:
        print("noisy Bell ...", flush=True)
        rows += cases.noisy_bell(dep, args.repeat)
        print("throughput, 1 worker ...", flush=True)
        one = cases.throughput(dep, args.jobs)
        print("API load ...", flush=True)
        rows += cases.api_load(dep)
        print("worker memory ...", flush=True)
        rows += cases.worker_memory(dep, args.memory_jobs)
    with deployment(args.redis_url, workers=2) as dep:
        print("throughput, 2 workers ...", flush=True)
        two = cases.throughput(dep, args.jobs)
    rows.append(
        cases.Row(
            f"throughput of small jobs (noisy Bell, 100 shots, fake_manila), {args.jobs} jobs, real Redis",
            f"2 workers: {two:.1f} jobs/s",
            f"1 worker: {one:.1f} jobs/s",
            f"{two / one:.2f}x",
            ">= 1.6x",
            two / one >= 1.6,
        )
    )
    # Last: it runs Aer inside this process, whose threads would slow the client cases above.
    print("ideal random circuit ...", flush=True)
    rows.append(cases.ideal_random_circuit(args.repeat * 2)[0])  # ~1.5 s runs: more pairs, less noise
    write(rows, args, time.time() - started)


def write(rows: list[cases.Row], args: argparse.Namespace, elapsed: float) -> None:
    command = "python -m bench " + " ".join(sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmark results",
        "",
        f"- command: `{command.strip()}` (commit {commit or 'unknown'}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s)",
        f"- machine: {machine()}; API, Redis, workers and load generator share it",
        f"- versions: {versions()}",
        "",
        "| case | measured | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r.ok]
        lines.append(f"| {r.case} | {r.measured} | {r.baseline} | {r.ratio} | {r.target} | {met} |")
    text = "\n".join(lines) + "\n"
    notes = (
        RESULTS.read_text().split("<!-- notes -->", 1)[1]
        if RESULTS.exists() and "<!-- notes -->" in RESULTS.read_text()
        else ""
    )
    RESULTS.write_text(text + "\n<!-- notes -->" + notes if notes else text)
    print(text)


if __name__ == "__main__":
    main()
