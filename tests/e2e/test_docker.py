"""The images and docker-compose.yml, for real: built, brought up, faulted, torn down.

Both images are built (``docker-compose build``; cached after the first run) and the stack is
brought up with 2 workers under its own project name and a free host port, with short leases
(``QRS_JOB_LEASE``, ``QRS_SHUTDOWN_GRACE`` below). The unmodified client, on the published
port, then runs SamplerV2, EstimatorV2 and the executor Sampler/Estimator; a busy worker is
``docker kill``ed, another stopped with SIGTERM mid-job, and Redis restarted, with nothing lost
and each recovery time asserted against the lease settings. ``down -v`` at the end removes the
containers, the network and the Redis volume (the images stay, as the build cache).

Needs a Docker engine and ``docker-compose`` (``../shared/tools/docker-offline.sh`` starts one
on a machine without registry access; ``.ci/run`` calls it). Without one the tests are skipped,
and the skip says why (``QRS_DOCKER_UNAVAILABLE`` carries the script's reason from CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Deployment, free_port
from tests.e2e.helpers import LONG_SHOTS, bell, long_circuit

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")

ROOT = Path(__file__).resolve().parents[2]
LEASE = 8.0  # QRS_JOB_LEASE in the stack (also the orphan sweep's period)
GRACE = 2.0  # QRS_SHUTDOWN_GRACE in the stack
# Slack on top of the lease arithmetic: a poll, a heartbeat round trip, the test's own 0.2 s
# polling and `docker` CLI calls on a loaded 2-core machine.
SLACK = 4.0
LABEL = "io.github.qiskit-runtime-server.client-version"
MEASURED: dict[str, float] = {}  # printed at the end (the figures in docs/deployment.md)


def _docker_unavailable() -> str | None:
    """Why the tests cannot run here, or ``None``."""
    if reason := os.environ.get("QRS_DOCKER_UNAVAILABLE"):
        return reason
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        return "docker or docker-compose is not installed (../shared/tools/docker-offline.sh installs both)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        return f"no Docker engine answers: {info.stderr.strip().splitlines()[-1:] or info.stdout[-200:]}"
    return None


class Stack:
    """One compose project: its CLI, its containers, the API's published base URL."""

    def __init__(self, project: str, port: int) -> None:
        self.project, self.port = project, port
        self.base = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "QRS_API_PORT": str(port),
            "QRS_PUBLIC_URL": self.base,
            "QRS_JOB_LEASE": str(LEASE),
            "QRS_SHUTDOWN_GRACE": str(GRACE),
            "QRS_LOG_FORMAT": "text",
        }

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker-compose", "-p", self.project, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def containers(self, service: str) -> list[str]:
        """Ids of the service's running containers."""
        return self.compose("ps", "-q", service).stdout.split()

    def workers(self) -> dict[str, dict[str, object]]:
        entries = httpx.get(f"{self.base}/workers", timeout=5).json()["workers"]
        return {w["id"]: w for w in entries}

    def holder(self, job_id: str, besides: str | None = None) -> dict[str, object] | None:
        """The ``/workers`` entry of a worker running ``job_id`` (other than ``besides``).

        A killed worker's entry still names its job until its heartbeat lapses.
        """
        entries = [w for w in self.workers().values() if w.get("current_job") == job_id and w["id"] != besides]
        return entries[0] if entries else None

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "200", check=False).stdout


def wait_for(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Poll every 0.2 s; the seconds it took. Fails after ``timeout`` (a hang guard)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if predicate():
                return time.monotonic() - start
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def container_of(worker: dict[str, object]) -> str:
    """The container a ``/workers`` entry runs in: its host name is the container's short id."""
    return str(worker["host"])


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = _docker_unavailable()
    if reason is not None:
        pytest.skip(f"docker tests skipped: {reason}")
    port = free_port()
    stack = Stack(f"qrstest{port}", port)
    started = time.monotonic()
    built = stack.compose("build", "api", "worker", timeout=1800, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    MEASURED["build_s"] = time.monotonic() - started
    try:
        started = time.monotonic()
        stack.compose("up", "-d", "--scale", "worker=2", "redis", "api", "worker")
        wait_for(lambda: httpx.get(f"{stack.base}/ready", timeout=5).json()["workers"] == 2, 180, "2 live workers")
        MEASURED["up_s"] = time.monotonic() - started
        yield stack
    finally:
        print(stack.logs()[-6000:])
        stack.compose("down", "-v", "--remove-orphans", "-t", "30", check=False)
        # Earlier builds of our images, left untagged by this one (the current ones stay: the cache).
        subprocess.run(["docker", "image", "prune", "-f", "--filter", f"label={LABEL}"], capture_output=True)
        print("measured:", json.dumps({k: round(v, 1) for k, v in MEASURED.items()}))


@pytest.fixture(scope="module")
def client(stack: Stack):  # type: ignore[no-untyped-def]
    env = Deployment(stack.base, {}).client_env()
    saved = {k: os.environ.get(k) for k in [*env, "QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL"]}
    for key in ("QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL"):
        os.environ.pop(key, None)
    os.environ.update(env)
    from qiskit_ibm_runtime import QiskitRuntimeService

    try:
        yield QiskitRuntimeService()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_both_images_carry_one_client_version_and_healthchecks_pass(stack: Stack) -> None:
    images = ["qiskit-runtime-server-api:latest", "qiskit-runtime-server-worker:cpu"]
    inspected = json.loads(
        subprocess.run(["docker", "image", "inspect", *images], capture_output=True, text=True, check=True).stdout
    )
    labels = {image["Config"]["Labels"][LABEL] for image in inspected}
    assert len(labels) == 1
    for image, name in zip(inspected, ("api", "worker"), strict=True):
        MEASURED[f"{name}_image_mb"] = image["Size"] / 1e6
    worker = stack.containers("worker")[0]
    installed = subprocess.run(
        ["docker", "exec", worker, "python", "-c", "import qiskit_ibm_runtime as c; print(c.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert {installed} == labels
    # The worker's healthcheck probe answers healthy and writes nothing (no log line per probe).
    probe = subprocess.run(
        ["docker", "exec", worker, "qiskit-runtime-server", "worker-health"], capture_output=True, text=True
    )
    assert (probe.returncode, probe.stdout, probe.stderr) == (0, "", "")

    def all_healthy() -> bool:
        ids = stack.containers("api") + stack.containers("worker")
        states = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout)
        return all(s["State"].get("Health", {}).get("Status") == "healthy" for s in states)

    wait_for(all_healthy, 120, "api and workers healthy")


def test_primitives_and_executor_jobs(client) -> None:  # type: ignore[no-untyped-def]
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_ibm_runtime import EstimatorV2, SamplerV2
    from qiskit_ibm_runtime.executor_estimator import Estimator
    from qiskit_ibm_runtime.executor_sampler import Sampler

    backend = client.backend("fake_manila")
    isa = bell(backend)
    observable = SparsePauliOp("ZZ").apply_layout(isa.layout)
    unmeasured = isa.remove_final_measurements(inplace=False)
    jobs = [
        SamplerV2(mode=backend).run([isa], shots=500),
        EstimatorV2(mode=backend).run([(unmeasured, observable)], precision=0.05),
        Sampler(mode=backend).run([isa], shots=400),
        Estimator(mode=backend).run([(unmeasured, observable)], precision=0.05),
    ]
    sampled, estimated, executor_sampled, executor_estimated = (job.result() for job in jobs)
    assert sum(sampled[0].data.meas.get_counts().values()) == 500
    assert float(estimated[0].data.evs) == pytest.approx(1.0, abs=0.3)
    assert sum(executor_sampled[0].data.meas.get_counts().values()) == 400
    assert float(executor_estimated[0].data.evs) == pytest.approx(1.0, abs=0.3)


def _long_job(client):  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2

    big = client.backend("fake_sherbrooke")
    return SamplerV2(mode=big).run([long_circuit(big)], shots=LONG_SHOTS)


def test_killed_worker_job_runs_again_within_a_lease(stack: Stack, client) -> None:  # type: ignore[no-untyped-def]
    job = _long_job(client)
    wait_for(lambda: stack.holder(job.job_id()) is not None, 120, "the long job to start")
    victim = stack.holder(job.job_id())
    assert victim is not None
    subprocess.run(["docker", "kill", container_of(victim)], check=True, capture_output=True)  # SIGKILL
    killed = time.monotonic()

    def taken_over() -> bool:
        return stack.holder(job.job_id(), besides=str(victim["id"])) is not None

    # The job's lease (in-progress key) lapses after one lease; the idle worker's next poll takes it.
    wait_for(taken_over, LEASE * 3 + SLACK + 30, "the other worker to take the job over")
    MEASURED["kill_takeover_s"] = taken_over_s = time.monotonic() - killed
    assert taken_over_s <= LEASE + SLACK
    # The dead worker's heartbeat entry lapses within a lease too.
    wait_for(lambda: victim["id"] not in stack.workers(), LEASE + SLACK, "the dead worker to drop out")
    job.cancel()  # no need to wait out tens of seconds of simulation
    wait_for(lambda: job.status() == "CANCELLED", 60, "the cancellation")
    # Back to two workers; the restarted one (same container, same pid) has a new id.
    subprocess.run(["docker", "start", container_of(victim)], check=True, capture_output=True)
    wait_for(lambda: len(stack.workers()) == 2, 120, "the restarted worker")
    restarted = [w for w in stack.workers().values() if w["host"] == victim["host"]]
    # A new id even where the pid repeats (init: true makes it the same small number each start).
    assert len(restarted) == 1 and restarted[0]["id"] != victim["id"]


def test_sigterm_hands_the_job_back_queued(stack: Stack, client) -> None:  # type: ignore[no-untyped-def]
    # Both workers busy, so the handed-back job has to wait in the queue: the client sees QUEUED.
    first, second = _long_job(client), _long_job(client)
    wait_for(lambda: all(stack.holder(j.job_id()) for j in (first, second)), 180, "both long jobs to run")
    leaving = stack.holder(first.job_id())
    assert leaving is not None
    container = container_of(leaving)
    stop = subprocess.Popen(["docker", "stop", "-t", "30", container], stdout=subprocess.DEVNULL)
    stopped = time.monotonic()
    wait_for(lambda: first.status() == "QUEUED", GRACE + SLACK + 10, "the handed-back job to read QUEUED")
    MEASURED["sigterm_queued_s"] = queued_s = time.monotonic() - stopped
    assert queued_s <= GRACE + SLACK, first.logs()
    # Put back by the stopping worker itself (not found later by the orphan sweep).
    assert f"handed back to the queue by worker {leaving['id']}" in first.logs()
    assert stop.wait(60) == 0
    MEASURED["sigterm_exit_s"] = exit_s = time.monotonic() - stopped
    assert exit_s <= GRACE + SLACK  # well inside stop_grace_period: no SIGKILL
    state = json.loads(subprocess.run(["docker", "inspect", container], capture_output=True, text=True).stdout)[0]
    assert state["State"]["ExitCode"] == 0  # clean exit (finish_job and the shutdown hook ran)
    assert leaving["id"] not in stack.workers()  # it left the registry on its way out
    second.cancel()  # frees the other worker, which takes the handed-back job
    wait_for(
        lambda: stack.holder(first.job_id(), besides=str(leaving["id"])) is not None,
        60,
        "the handed-back job to run on the other worker",
    )
    assert first.status() == "RUNNING"
    first.cancel()
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    wait_for(lambda: len(stack.workers()) == 2, 120, "the restarted worker")


def test_redis_restart_loses_nothing(stack: Stack, client) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2

    backend = client.backend("fake_manila")
    isa = bell(backend)
    done = SamplerV2(mode=backend).run([isa], shots=300)
    before = done.result()[0].data.meas.get_counts()
    accepted = [SamplerV2(mode=backend).run([isa], shots=300) for _ in range(6)]
    restarted = time.monotonic()
    stack.compose("restart", "-t", "10", "redis")
    accepted += [SamplerV2(mode=backend).run([isa], shots=300) for _ in range(3)]
    for job in accepted:
        assert sum(job.result()[0].data.meas.get_counts().values()) == 300
    MEASURED["redis_restart_all_done_s"] = time.monotonic() - restarted
    assert client.job(done.job_id()).result()[0].data.meas.get_counts() == before
    wait_for(lambda: len(stack.workers()) == 2, LEASE + SLACK, "both workers after the Redis restart")
