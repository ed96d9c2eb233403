"""Shared fixtures: free ports, the real Redis, and server processes started like a user would.

The real Redis is ``REDIS_TEST_URL`` (default ``redis://127.0.0.1:6379/15``, and 14, 13, ... for
the further workers of ``pytest -n``; the database is flushed by the tests that use it). Without
it the Redis tests skip, except under ``CI=true`` where they fail: CI must prove the split
deployment.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Under pytest-xdist each worker flushes its own database (gw0: 15, gw1: 14, ...).
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", f"redis://127.0.0.1:6379/{15 - _XDIST_INDEX % 8}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_available(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def real_redis_url() -> str:
    """The real Redis URL, flushed; skips without one, fails under CI=true."""
    if not redis_available(REDIS_TEST_URL):
        message = f"real Redis not reachable at {REDIS_TEST_URL}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    import redis

    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    return REDIS_TEST_URL


class ServerProcess:
    """A ``qiskit-runtime-server`` process (any subcommand) with its log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, command: list[str] | None = None, cwd: Path = ROOT) -> ServerProcess:
        """Start ``python -m qiskit_runtime_server ARGS`` (or ``command`` + ARGS) in ``cwd``."""
        out = self.log.open("ab")
        command = command or [sys.executable, "-m", "qiskit_runtime_server"]
        self.proc = subprocess.Popen(
            [*command, *self.args], cwd=cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        return self

    def stop(self, sig: int | None = None) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def server_env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QRS_", "QISKIT_IBM", "REDIS_URL"))}
    env.update({"QRS_PORT": str(port), "QRS_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def wait_ready(base: str, proc: ServerProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{proc.output()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s:\n{proc.output()}")


class Deployment:
    """A running deployment: its base URL and processes."""

    def __init__(self, base: str, processes: dict[str, ServerProcess]) -> None:
        self.base = base
        self.processes = processes

    def client_env(self) -> dict[str, str]:
        return {
            "QISKIT_IBM_TOKEN": "test-api-key",
            "QISKIT_IBM_URL": f"{self.base}/experimental/api/v1",
            "IAM_URL": self.base,
            "GLOBAL_SEARCH_URL": f"{self.base}/search",
            "GLOBAL_CATALOG_URL": f"{self.base}/catalog",
        }


@contextlib.contextmanager
def embedded_server(folder: Path, **env: str) -> Iterator[Deployment]:
    """``qiskit-runtime-server`` (API + worker, fakeredis) on a free port, with extra ``env``."""
    port = free_port()
    proc = ServerProcess([], server_env(port, **env), folder / "server.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield Deployment(base, {"server": proc})
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The all-in-one server (API + worker, fakeredis), as ``qiskit-runtime-server`` starts it."""
    with embedded_server(tmp_path_factory.mktemp("embedded")) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def split(real_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``qiskit-runtime-server api`` + ``qiskit-runtime-server worker`` on the real Redis."""
    port = free_port()
    folder = tmp_path_factory.mktemp("split")
    env = server_env(port, REDIS_URL=real_redis_url, QRS_QUEUE_NAME=f"qrs:test-queue:{port}")
    api = ServerProcess(["api"], env, folder / "api.log").start()
    worker = ServerProcess(["worker"], env, folder / "worker.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, api)
        yield Deployment(base, {"api": api, "worker": worker})
    finally:
        worker.stop()
        api.stop()


@pytest.fixture(params=["embedded", "split"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """Each end-to-end test runs against both deployments."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def service(deployment: Deployment, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """An unmodified ``QiskitRuntimeService()`` configured only through the printed variables."""
    for key in ("QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL", "QISKIT_FUNCTIONS_EXPERIMENTAL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in deployment.client_env().items():
        monkeypatch.setenv(key, value)
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService()
