"""The compose stack configured from an ``.env`` file: access control on, in the built images.

A second project (its own name and free port; the images of ``test_docker.py``, built if absent)
is brought up with one worker and every variable from an env file given with ``--env-file``, as
an operator's ``.env`` next to ``docker-compose.yml`` would give them. The real client with a
key of ``QRS_API_KEYS`` runs a job, a wrong key is refused, ``/metrics`` and ``/workers`` answer
only an admin key (``QRS_ADMIN_KEYS``), and the first job on a device whose noise model was not
preloaded bills its simulation, not the noise model's construction. Skipped like
``test_docker.py`` without a Docker engine.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Deployment, free_port
from tests.e2e.helpers import bell
from tests.e2e.test_docker import Stack, _docker_unavailable, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")

KEY, ADMIN = "team-key-4f1c", "admin-key-9b2e"
CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/acct:team-instance::"


class EnvFileStack(Stack):
    """A :class:`Stack` whose variables all come from an env file, none from the shell."""

    def __init__(self, project: str, port: int, env_file: Path) -> None:
        super().__init__(project, port)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QRS_") and k != "REDIS_URL"}
        self.env_file = env_file

    def compose(self, *args: str, timeout: float = 900, check: bool = True):  # type: ignore[no-untyped-def]
        return super().compose("--env-file", str(self.env_file), *args, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvFileStack]:
    reason = _docker_unavailable()
    if reason is not None:
        pytest.skip(f"docker tests skipped: {reason}")
    port = free_port()
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text(
        "\n".join(
            [
                f"QRS_API_PORT={port}",
                f"QRS_PUBLIC_URL=http://127.0.0.1:{port}",
                f"QRS_API_KEYS={KEY}={CRN}",
                f"QRS_ADMIN_KEYS={ADMIN}",
                "QRS_LOG_FORMAT=text",
                # Preload one small device only: fake_sherbrooke is left for the first job to build.
                "QRS_PRELOAD_BACKENDS=fake_manila",
                "",
            ]
        )
    )
    stack = EnvFileStack(f"qrsenv{port}", port, env_file)
    built = stack.compose("build", "api", "worker", timeout=1800, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        stack.compose("up", "-d", "redis", "api", "worker")
        wait_for(lambda: httpx.get(f"{stack.base}/ready", timeout=5).json()["workers"] == 1, 180, "a live worker")
        yield stack
    finally:
        print(stack.logs()[-6000:])
        stack.compose("down", "-v", "--remove-orphans", "-t", "30", check=False)


def _client(stack: Stack, token: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import QiskitRuntimeService

    for key, value in Deployment(stack.base, {}).client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("QISKIT_IBM_TOKEN", token)
    for key in ("QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL"):
        monkeypatch.delenv(key, raising=False)
    return QiskitRuntimeService()


def test_published_on_loopback_with_the_env_files_settings(stack: EnvFileStack) -> None:
    port = stack.compose("port", "api", "8000").stdout.strip()
    assert port == f"127.0.0.1:{stack.port}"
    inspected = stack.compose("exec", "-T", "api", "printenv", "QRS_ADMIN_KEYS", "QRS_JOB_MEMORY_LIMIT").stdout
    assert inspected.split() == [ADMIN, "4096"]


def test_the_right_key_runs_a_job_and_a_wrong_one_is_refused(
    stack: EnvFileStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qiskit_ibm_runtime import SamplerV2

    service = _client(stack, KEY, monkeypatch)
    assert [i["crn"] for i in service.instances()] == [CRN]
    backend = service.backend("fake_sherbrooke")  # not preloaded: its noise model is built for this job
    started = time.monotonic()
    job = SamplerV2(mode=backend).run([bell(backend)], shots=200)
    assert sum(job.result()[0].data.meas.get_counts().values()) == 200
    took = time.monotonic() - started
    billed = job.metrics()["usage"]["quantum_seconds"]
    print(f"first job on fake_sherbrooke: billed {billed} s, submission to result {took:.2f} s")
    # Building fake_sherbrooke's noise model alone takes 2-3 s; a Bell pair's simulation, ms.
    assert 0 < billed < 0.5, (billed, took)
    with pytest.raises(Exception, match="valid API token"):
        _client(stack, "not-a-key", monkeypatch).backends()
    assert httpx.get(f"{stack.base}/api/v1/jobs", headers={"Authorization": "apikey wrong"}).status_code == 401


def test_metrics_and_workers_need_the_admin_key(stack: EnvFileStack) -> None:
    for path in ("/metrics", "/workers"):
        assert httpx.get(f"{stack.base}{path}").status_code == 401
        assert httpx.get(f"{stack.base}{path}", headers={"Authorization": f"apikey {KEY}"}).status_code == 403
        assert httpx.get(f"{stack.base}{path}", headers={"Authorization": f"apikey {ADMIN}"}).status_code == 200
