"""The deployment survives its faults: the compose services' commands run as plain processes.

One Redis (its own ``redis-server`` binary, port and data folder, append-only file fsynced on
every write, as in ``docker-compose.yml``), one ``qiskit-runtime-server api`` and two
``qiskit-runtime-server worker`` processes; the unmodified client submits the jobs. The tests
run in order on one deployment:

1. 50 jobs complete, and both workers ran some;
2. ``kill -9`` of a worker mid-job: the other worker re-runs the job (attempt 2) within one
   lease plus the job's own running time (bound asserted below);
3. the API restarts during a burst: every accepted job completes;
4. Redis is killed and restarted: every accepted job completes and earlier results are intact;
5. SIGTERM of a busy worker: it hands its job back and exits with status 0; the job completes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
import redis as redis_sync

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from tests.conftest import Deployment, ServerProcess, free_port, server_env, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")

# Short lease so the test is quick; the default (15 s) is what the bound in docs/deployment.md uses.
LEASE = 4.0
# A killed worker's job is running again elsewhere within a lease plus one poll and a
# heartbeat period; then it needs its own running time (LONG_LAYERS: a few seconds here).
RECOVERY_BOUND = LEASE + 120.0
LONG_LAYERS = 3000


class RedisServer:
    """A ``redis-server`` process with its own port and data folder, append-only file on."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"]
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(["redis-server", *args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis_sync.Redis.from_url(self.url, socket_connect_timeout=0.5).ping():
                    return self
            except redis_sync.RedisError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    folder = tmp_path_factory.mktemp("deployment")
    redis = RedisServer(folder).start()
    port = free_port()
    env = server_env(port, REDIS_URL=redis.url, QRS_JOB_LEASE=str(LEASE), QRS_SHUTDOWN_GRACE="1")
    processes = {"api": ServerProcess(["api"], env, folder / "api.log").start()}
    for name in ("w1", "w2"):
        processes[name] = ServerProcess(["worker"], {**env, "QRS_WORKER_ID": name}, folder / f"{name}.log").start()
    deployment = Deployment(f"http://127.0.0.1:{port}", processes)
    deployment.redis = redis  # type: ignore[attr-defined]
    try:
        wait_ready(deployment.base, processes["api"])
        wait_for(lambda: len(workers_view(deployment)) == 2, 90, "two live workers")
        yield deployment
    finally:
        for proc in processes.values():
            proc.stop()
        redis.kill()


@pytest.fixture(scope="module")
def client(cluster: Deployment):  # type: ignore[no-untyped-def]
    saved = {k: os.environ.get(k) for k in cluster.client_env()}
    os.environ.update(cluster.client_env())
    from qiskit_ibm_runtime import QiskitRuntimeService

    try:
        yield QiskitRuntimeService()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, redis_sync.RedisError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def workers_view(cluster: Deployment) -> dict[str, dict[str, object]]:
    entries = httpx.get(f"{cluster.base}/workers", timeout=5).json()["workers"]
    return {w["id"]: w for w in entries}


def record(cluster: Deployment, job_id: str) -> JobRecord:
    raw = redis_sync.Redis.from_url(cluster.redis.url).get(keys.job(job_id))  # type: ignore[attr-defined]
    assert raw is not None
    return msgspec.json.decode(raw, type=JobRecord)


def circuit(client, layers: int = 1):  # type: ignore[no-untyped-def]
    from qiskit import QuantumCircuit
    from qiskit.transpiler import generate_preset_pass_manager

    qc = QuantumCircuit(5)
    for _ in range(layers):
        for q in range(5):
            qc.rx(0.3, q)
        for q in range(4):
            qc.cx(q, q + 1)
    qc.measure_all()
    return generate_preset_pass_manager(backend=client.backend("fake_manila"), optimization_level=0).run(qc)


def sampler(client):  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2

    return SamplerV2(mode=client.backend("fake_manila"))


def running_on(cluster: Deployment, job_id: str) -> str:
    """Wait until ``job_id`` runs and return the worker running it."""
    holder: list[str] = []

    def started() -> bool:
        rec = record(cluster, job_id)
        if rec.status == JobStatus.RUNNING and rec.worker_id:
            holder.append(rec.worker_id)
            return True
        return False

    wait_for(started, 120, f"job {job_id} to start")
    return holder[-1]


def test_jobs_spread_over_both_workers(cluster: Deployment, client) -> None:  # type: ignore[no-untyped-def]
    isa = circuit(client)
    jobs = [sampler(client).run([isa], shots=200) for _ in range(50)]
    for job in jobs:
        assert sum(job.result()[0].data.meas.get_counts().values()) == 200
    ran_on = {record(cluster, job.job_id()).worker_id for job in jobs}
    assert ran_on == {"w1", "w2"}
    assert httpx.get(f"{cluster.base}/ready").json() == {"status": "ready", "workers": 2}
    metrics = httpx.get(f"{cluster.base}/metrics").text
    assert 'qrs_jobs_finished_total{program="sampler",state="Completed"} 50.0' in metrics
    assert 'qrs_workers_live{device="CPU"} 2.0' in metrics


def test_killed_worker_job_runs_again_elsewhere(cluster: Deployment, client) -> None:  # type: ignore[no-untyped-def]
    job = sampler(client).run([circuit(client, LONG_LAYERS)], shots=100)
    victim = running_on(cluster, job.job_id())
    survivor = ({"w1", "w2"} - {victim}).pop()
    assert workers_view(cluster)[victim]["current_job"] == job.job_id()
    time.sleep(0.5)
    cluster.processes[victim].kill()  # SIGKILL: no clean-up of any kind
    killed_at = time.monotonic()
    counts = job.result()[0].data.meas.get_counts()
    recovered_in = time.monotonic() - killed_at
    assert sum(counts.values()) == 100
    final = record(cluster, job.job_id())
    assert (final.status, final.worker_id, final.attempts) == (JobStatus.COMPLETED, survivor, 2)
    assert recovered_in < RECOVERY_BOUND
    assert victim not in workers_view(cluster)  # its heartbeat expired
    cluster.processes[victim].start()
    wait_for(lambda: victim in workers_view(cluster), 90, "the restarted worker")


def test_api_restart_during_burst(cluster: Deployment, client) -> None:  # type: ignore[no-untyped-def]
    isa = circuit(client)
    accepted, refused = [], []

    def burst() -> None:
        for _ in range(30):
            try:
                accepted.append(sampler(client).run([isa], shots=100))
            except Exception as exc:  # the client gave up while the API was down: not accepted
                refused.append(exc)
            time.sleep(0.05)

    thread = threading.Thread(target=burst)
    thread.start()
    wait_for(lambda: len(accepted) >= 5, 60, "the first submissions")
    api = cluster.processes["api"]
    api.stop()  # SIGTERM: uvicorn finishes the requests in flight
    api.start()
    wait_ready(cluster.base, api)
    thread.join()
    assert len(accepted) >= 10
    for job in accepted:
        assert sum(job.result()[0].data.meas.get_counts().values()) == 100


def test_redis_restart_keeps_jobs_and_results(cluster: Deployment, client) -> None:  # type: ignore[no-untyped-def]
    redis = cluster.redis  # type: ignore[attr-defined]
    store = redis_sync.Redis.from_url(redis.url)
    isa = circuit(client, 300)
    earlier = [sampler(client).run([isa], shots=100) for _ in range(3)]
    before = {job.job_id(): job.result() and store.get(keys.job_result(job.job_id())) for job in earlier}
    accepted = [sampler(client).run([isa], shots=100) for _ in range(10)]
    wait_for(lambda: record(cluster, accepted[0].job_id()).status != JobStatus.QUEUED, 120, "the burst to start")
    redis.kill()  # SIGKILL: only what the append-only file holds survives
    time.sleep(1)
    redis.start()
    accepted += [sampler(client).run([isa], shots=100) for _ in range(5)]
    for job in accepted:
        assert sum(job.result()[0].data.meas.get_counts().values()) == 100
    for job_id, result in before.items():
        assert result is not None and store.get(keys.job_result(job_id)) == result
        assert client.job(job_id).status() == "DONE"
    wait_for(lambda: len(workers_view(cluster)) == 2, 30, "both workers after the Redis restart")
    assert all(proc.proc.poll() is None for proc in cluster.processes.values())  # type: ignore[union-attr]


def test_sigterm_hands_the_job_back(cluster: Deployment, client) -> None:  # type: ignore[no-untyped-def]
    job = sampler(client).run([circuit(client, LONG_LAYERS)], shots=100)
    leaving = running_on(cluster, job.job_id())
    other = ({"w1", "w2"} - {leaving}).pop()
    proc = cluster.processes[leaving]
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=60) == 0
    assert leaving not in workers_view(cluster)  # left the registry on its way out
    assert sum(job.result()[0].data.meas.get_counts().values()) == 100
    final = record(cluster, job.job_id())
    assert (final.status, final.worker_id) == (JobStatus.COMPLETED, other)
