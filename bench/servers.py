"""Start deployments for benchmarks: the same entry points a user runs, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLIENT_KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deployment:
    """Processes of one deployment and the URLs a client needs."""

    def __init__(self, base: str, procs: dict[str, subprocess.Popen[bytes]], env: dict[str, str]) -> None:
        self.base = base
        self.procs = procs
        self.env = env

    def client_env(self) -> dict[str, str]:
        return {
            "QISKIT_IBM_TOKEN": CLIENT_KEY,
            "QISKIT_IBM_URL": f"{self.base}/experimental/api/v1",
            "IAM_URL": self.base,
            "GLOBAL_SEARCH_URL": f"{self.base}/search",
            "GLOBAL_CATALOG_URL": f"{self.base}/catalog",
        }

    def add_worker(self, log_dir: Path) -> subprocess.Popen[bytes]:
        name = f"worker{len([k for k in self.procs if k.startswith('worker')]) + 1}"
        proc = _spawn(["worker"], self.env, log_dir / f"{name}.log")
        self.procs[name] = proc
        return proc

    def pid(self, name: str) -> int:
        return self.procs[name].pid


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qiskit_runtime_server", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_ready(base: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server at {base} not ready")


def wait_workers_warm(deployment: Deployment, seconds: float = 8.0) -> None:
    """Workers import qiskit in their simulation process at start-up; give them time."""
    time.sleep(seconds)


@contextlib.contextmanager
def deployment(redis_url: str | None, workers: int = 1, **extra: str) -> Iterator[Deployment]:
    """Embedded (``redis_url`` None) or split (API + ``workers`` workers) on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QRS_", "QISKIT_IBM", "REDIS_URL"))}
    env.update(QRS_PORT=str(port), QRS_HOST="127.0.0.1", QRS_LOG_LEVEL="WARNING", **extra)
    log_dir = Path(tempfile.mkdtemp(prefix="qrs-bench-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    if redis_url is None:
        procs["server"] = _spawn([], env, log_dir / "server.log")
    else:
        env.update(REDIS_URL=redis_url, QRS_QUEUE_NAME=f"qrs:bench:{port}")
        procs["api"] = _spawn(["api"], env, log_dir / "api.log")
    base = f"http://127.0.0.1:{port}"
    result = Deployment(base, procs, env)
    try:
        _wait_ready(base)
        if redis_url is not None:
            for _ in range(workers):
                result.add_worker(log_dir)
        wait_workers_warm(result)
        yield result
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
