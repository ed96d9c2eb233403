"""Client-version matrix: every minor release of qiskit-ibm-runtime from 0.40 to 0.51, unmodified.

Each release runs ``client_script.py`` in its own cached venv (``venvs.py``) against one embedded
server, configured by environment variables only:

* 0.49 and later: the plain recipe the server prints at start-up (``QISKIT_IBM_URL`` with
  ``experimental``, ``IAM_URL``, ``GLOBAL_SEARCH_URL``, ``GLOBAL_CATALOG_URL``), parsed from its log.
* 0.40 to 0.48: proxy mode (``QRS_PROXY_PORT``), because these releases hard-code IBM's IAM host:
  ``HTTPS_PROXY``, ``REQUESTS_CA_BUNDLE`` (the ``ca-bundle.pem`` the server writes into
  ``QRS_PROXY_DIR``), ``NO_PROXY``, ``QISKIT_IBM_TOKEN``, ``QISKIT_IBM_INSTANCE``,
  ``QISKIT_IBM_CHANNEL=ibm_quantum_platform`` and no ``QISKIT_IBM_URL``: the client's default URLs.

There is no pytest-xdist here, so the session fixture starts the selected versions' scripts
together (``QRS_CLIENT_PARALLEL`` at a time, default 4) and each test waits for its own; every
script is bounded by ``QRS_CLIENT_CASE_TIMEOUT`` seconds (default 90). The venvs are built (or
reused) once per session, in parallel, before the server starts. ``QRS_CLIENT_SERVER_PYTHON``
runs the server from another installation (default: this interpreter).

Run: ``python -m pytest -m clients`` (``-k 0.51`` for one version).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qiskit_runtime_server.shared.settings import DEFAULT_INSTANCE
from tests.clients.venvs import VERSIONS, VenvResult, ensure_venvs, read_marker
from tests.conftest import ServerProcess, free_port, server_env, wait_ready

pytestmark = pytest.mark.clients

SCRIPT = Path(__file__).with_name("client_script.py")
CASE_TIMEOUT = float(os.environ.get("QRS_CLIENT_CASE_TIMEOUT", "90"))
PARALLEL = int(os.environ.get("QRS_CLIENT_PARALLEL", "4"))
PLAIN_FROM = (0, 49)  # first release with IAM_URL and the other URL variables (docs/protocol.md §10)
EXPORT = re.compile(r"^export (\w+)=(.*)$")


def parse_version(version: str) -> tuple[int, ...]:
    """``"0.49.0"`` -> ``(0, 49, 0)``."""
    return tuple(int(part) for part in version.split("."))


def uses_plain_recipe(version: str) -> bool:
    """True for releases that the plain export recipe reaches (0.49+); older ones need proxy mode."""
    return parse_version(version) >= PLAIN_FROM


def printed_plain_recipe(log: str) -> dict[str, str]:
    """The variables of the first ``export`` block the server prints (the plain recipe)."""
    recipe: dict[str, str] = {}
    for line in log.splitlines():
        match = EXPORT.match(line.strip())
        if match:
            recipe[match.group(1)] = match.group(2).strip("'\"")
        elif recipe:  # the block ended
            break
    return recipe


@dataclass
class CaseResult:
    """One script run: exit status, the JSON step lines it printed, and its stderr's tail."""

    version: str
    recipe: str
    returncode: int | None  # None: killed at the timeout
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    stderr_tail: str = ""

    def summary(self) -> str:
        """One line per step (name, ok, seconds, error) for a failure message."""
        head = f"qiskit-ibm-runtime {self.version} ({self.recipe} recipe): rc={self.returncode}"
        lines = [f"{head} in {self.seconds:.1f} s"]
        for step in self.steps:
            text = f"  {step.get('name')}: ok={step.get('ok')} {step.get('seconds')} s"
            if step.get("skipped"):
                text += f" skipped ({step.get('reason')})"
            if not step.get("ok"):
                text += f" {step.get('error')}"
            lines.append(text)
        lines.append("stderr tail:\n" + self.stderr_tail)
        return "\n".join(lines)


@dataclass
class Matrix:
    """The session's server, the venvs, and a future per selected version's script run."""

    base: str
    proxy_port: int
    proxy_dir: Path
    instance: str
    plain: dict[str, str]
    venvs: dict[str, VenvResult | BaseException]
    venv_seconds: float
    runs: dict[str, Future[CaseResult]]


def client_env(matrix: Matrix, version: str, home: Path) -> tuple[str, dict[str, str]]:
    """The recipe's name and the client's whole environment: nothing from the outer shell but PATH."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no saved account (~/.qiskit) can leak in
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if uses_plain_recipe(version):
        env.update(matrix.plain)
        return "plain", env
    env.update(
        {
            "HTTPS_PROXY": f"http://127.0.0.1:{matrix.proxy_port}",
            "REQUESTS_CA_BUNDLE": str(matrix.proxy_dir / "ca-bundle.pem"),
            "NO_PROXY": "127.0.0.1,localhost",
            "QISKIT_IBM_TOKEN": "any-api-key",
            "QISKIT_IBM_INSTANCE": matrix.instance,
            # The default of every release 0.40-0.51; "ibm_cloud" (0.40-0.43 only) would mean the
            # older quantum-computing.cloud.ibm.com host.
            "QISKIT_IBM_CHANNEL": "ibm_quantum_platform",
        }
    )
    return "proxy", env


def run_case(matrix: Matrix, version: str, folder: Path) -> CaseResult:
    """Run the script in ``version``'s venv with the recipe's environment; never raises for a failure."""
    built = matrix.venvs[version]
    recipe = "plain" if uses_plain_recipe(version) else "proxy"
    if not isinstance(built, VenvResult):
        return CaseResult(version, recipe, -1, 0.0, stderr_tail=f"venv build failed: {built}")
    home = folder / f"home-{version}"
    home.mkdir(parents=True, exist_ok=True)
    recipe, env = client_env(matrix, version, home)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(built.python), str(SCRIPT)],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=CASE_TIMEOUT,
            check=False,
        )
        returncode: int | None = done.returncode
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = None
        stdout = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else expired.stdout or ""
        stderr = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else expired.stderr or ""
        stderr += f"\n[killed after {CASE_TIMEOUT} s]"
    seconds = time.monotonic() - started
    (folder / f"client-{version}.out").write_text(stdout)
    (folder / f"client-{version}.err").write_text(stderr)
    steps = []
    for line in stdout.splitlines():
        try:
            steps.append(json.loads(line))
        except ValueError:
            continue
    return CaseResult(version, recipe, returncode, seconds, steps, stderr[-4000:])


def selected_versions(session: pytest.Session) -> list[str]:
    """The versions of this module's cases that pytest will run (so ``-k`` builds only those)."""
    chosen = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        module = getattr(item, "module", None)
        if module is not None and module.__name__ == __name__ and callspec is not None:
            version = callspec.params.get("version")
            if version in VERSIONS and version not in chosen:
                chosen.append(version)
    return chosen


@pytest.fixture(scope="session")
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """Build the venvs, start one embedded server (proxy mode on), and launch every selected script."""
    versions = selected_versions(request.session) or list(VERSIONS)
    started = time.monotonic()
    venvs = ensure_venvs(versions)
    venv_seconds = time.monotonic() - started
    print(f"\nclient venvs ({len(versions)}) ready in {venv_seconds:.1f} s", file=sys.stderr)

    folder = tmp_path_factory.mktemp("clients")
    proxy_dir = folder / "proxy"
    proxy_dir.mkdir(mode=0o700)
    proxy_dir.chmod(stat.S_IRWXU)  # proxy mode refuses a CA directory others can read
    port, proxy_port = free_port(), free_port()
    env = server_env(port, QRS_PROXY_PORT=str(proxy_port), QRS_PROXY_DIR=str(proxy_dir))
    server_python = os.environ.get("QRS_CLIENT_SERVER_PYTHON", sys.executable)
    # cwd outside the checkout: another installation must not import this tree's package folder.
    server = ServerProcess([], env, folder / "server.log").start([server_python, "-m", "qiskit_runtime_server"], folder)
    base = f"http://127.0.0.1:{port}"
    pool = ThreadPoolExecutor(max_workers=max(1, PARALLEL))
    try:
        wait_ready(base, server)
        deadline = time.monotonic() + 10
        plain = printed_plain_recipe(server.output())
        while "QISKIT_IBM_URL" not in plain and time.monotonic() < deadline:
            time.sleep(0.1)
            plain = printed_plain_recipe(server.output())
        assert "QISKIT_IBM_URL" in plain, f"no recipe printed:\n{server.output()}"
        state = Matrix(base, proxy_port, proxy_dir, DEFAULT_INSTANCE, plain, venvs, venv_seconds, {})
        for version in versions:
            state.runs[version] = pool.submit(run_case, state, version, folder)
        yield state
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        server.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_client_version(matrix: Matrix, version: str, record_property: Any) -> None:
    """The release's script passes every step (the executor Sampler is skipped where it is absent)."""
    built = matrix.venvs.get(version)
    if isinstance(built, VenvResult):
        record_property("packages", json.dumps(read_marker(built.path).get("packages", {})))
    result = matrix.runs[version].result(timeout=CASE_TIMEOUT * (len(matrix.runs) + 1))
    record_property("seconds", round(result.seconds, 1))
    record_property("steps", json.dumps([{k: s.get(k) for k in ("name", "ok", "seconds")} for s in result.steps]))
    print(result.summary())
    summary = [step for step in result.steps if step.get("name") == "summary"]
    assert result.returncode == 0 and summary and summary[0].get("ok"), result.summary()
    names = [step.get("name") for step in result.steps]
    for expected in ("connect", "backends", "sampler", "estimator", "job", "jobs", "session", "executor_sampler"):
        assert expected in names, result.summary()
    executor = next(step for step in result.steps if step.get("name") == "executor_sampler")
    # executor_sampler appeared in 0.47.0; earlier releases must report it as skipped, later ones run it.
    assert bool(executor.get("skipped")) == (parse_version(version) < (0, 47)), result.summary()
