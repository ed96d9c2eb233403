"""Cancel latency of a running job, with the unmodified client against a real server.

    python -m bench.cancel [--repeat 5]                                  # embedded server
    BENCH_REDIS_URL=redis://127.0.0.1:6379/3 python -m bench.cancel --split   # api + worker

For each repeat: submit a long noisy simulation (about 100 s of Aer time), wait until it is
Running, then measure

* ``cancel call``: ``job.cancel()`` round trip (the record is Cancelled when it returns);
* ``stopped``: from the cancel call until the worker has killed the simulation (its
  "simulation stopped" log line appears; polled every 5 ms);
* ``next job``: from the cancel call until a 10-shot Bell job submitted right after it has
  completed (the worker is free again; includes the client's 0.5 s status polling).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx

warnings.filterwarnings("ignore", category=DeprecationWarning)
ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(split: bool) -> tuple[str, list[subprocess.Popen[bytes]]]:
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QRS_", "QISKIT_IBM", "REDIS_URL"))}
    env.update(QRS_PORT=str(port), QRS_LOG_LEVEL="WARNING")
    log = open(Path(tempfile.gettempdir()) / f"bench-cancel-{port}.log", "wb")  # noqa: SIM115
    if split:
        env.update(REDIS_URL=os.environ["BENCH_REDIS_URL"], QRS_QUEUE_NAME=f"qrs:bench-queue:{port}")
        commands = [["api"], ["worker"]]
    else:
        commands = [[]]
    procs = [
        subprocess.Popen([sys.executable, "-m", "qiskit_runtime_server", *c], cwd=ROOT, env=env, stdout=log, stderr=log)
        for c in commands
    ]
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return base, procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--split", action="store_true")
    args = parser.parse_args()
    base, procs = start(args.split)
    try:
        os.environ.update(
            QISKIT_IBM_TOKEN="bench",
            QISKIT_IBM_URL=f"{base}/experimental/api/v1",
            IAM_URL=base,
            GLOBAL_SEARCH_URL=f"{base}/search",
            GLOBAL_CATALOG_URL=f"{base}/catalog",
        )
        from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2

        sys.path.insert(0, str(ROOT))
        from tests.e2e.helpers import LONG_SHOTS, bell, long_circuit

        service = QiskitRuntimeService()
        big, small = service.backend("fake_sherbrooke"), service.backend("fake_manila")
        long_isa, bell_isa = long_circuit(big), bell(small)
        token = httpx.post(f"{base}/identity/token", data={"apikey": "bench"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        rows = []
        for _ in range(args.repeat):
            job = SamplerV2(mode=big).run([long_isa], shots=LONG_SHOTS)
            while job.status() != "RUNNING":
                time.sleep(0.05)
            time.sleep(0.5)  # well inside the simulation
            t0 = time.perf_counter()
            job.cancel()
            t_call = time.perf_counter() - t0
            nxt = SamplerV2(mode=small).run([bell_isa], shots=10)
            logs_url = f"{base}/api/v1/jobs/{job.job_id()}/logs"
            while "simulation stopped" not in httpx.get(logs_url, headers=headers).text:
                time.sleep(0.005)
            t_stop = time.perf_counter() - t0
            nxt.result()
            t_next = time.perf_counter() - t0
            rows.append((t_call, t_stop, t_next))
            print(f"cancel call {t_call * 1000:7.1f} ms   stopped {t_stop * 1000:7.1f} ms   next job {t_next:6.2f} s")
        for i, name in enumerate(["cancel call ms", "stopped ms", "next job s"]):
            values = [r[i] * (1 if i == 2 else 1000) for r in rows]
            print(f"median {name}: {statistics.median(values):.2f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
