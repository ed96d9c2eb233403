"""The pytest plugin, run the way a user's project runs it: a small test file
in a fresh directory, in a pytest subprocess that loads the plugin through its entry point, with
the real client. A SamplerV2 Bell job on fake_manila, clean state between tests, a marker's
dedicated server, an export/reset/import round trip after which ``service.job(id).result()``
works again, and the same file with ``--qrs-url`` against a server started separately."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, free_port, server_env

pytestmark = pytest.mark.e2e
pytest_plugins = ["pytester"]

USER_TESTS = """
import json
import urllib.request

import pytest
from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import SamplerV2


def bell_job(service):
    backend = service.backend("fake_manila")
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)
    return SamplerV2(mode=backend).run([isa], shots=200)


def test_bell(runtime_service):
    counts = bell_job(runtime_service).result()[0].data.meas.get_counts()
    assert sum(counts.values()) == 200
    assert counts.get("00", 0) + counts.get("11", 0) > 150
    assert len(runtime_service.jobs()) == 1


def test_the_next_test_starts_clean(runtime_service, qrs_server):
    assert runtime_service.jobs() == []
    assert qrs_server.client_env()["QISKIT_IBM_URL"] == qrs_server.url + "/experimental/api/v1"


def test_export_reset_import(runtime_service, qrs_server):
    job = bell_job(runtime_service)
    counts = job.result()[0].data.meas.get_counts()
    with urllib.request.urlopen(qrs_server.url + "/admin/export") as response:
        export = response.read()
    qrs_server.reset()
    assert runtime_service.jobs() == []
    request = urllib.request.Request(qrs_server.url + "/admin/import", data=export, method="POST")
    if qrs_server.admin_key:
        request.add_header("Authorization", "apikey " + qrs_server.admin_key)
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read())["jobs"] == 1
    again = runtime_service.job(job.job_id())
    assert again.result()[0].data.meas.get_counts() == counts


@pytest.mark.qrs(env={"QRS_INSTANCE": "crn:v1:bluemix:public:quantum-computing:us-east:a/plugin:marked::"})
def test_a_marked_test_gets_its_own_server(qrs_server, qiskit_runtime_server):
    assert qrs_server.url != qiskit_runtime_server.url
    assert qrs_server.client_env()["QISKIT_IBM_INSTANCE"].endswith("a/plugin:marked::")
"""


def wait_ready(base: str, proc: ServerProcess, timeout: float = 60.0) -> None:
    """``tests.conftest.wait_ready`` with urllib: ``pytester`` drops the modules a test imported
    (httpx imports parts of httpcore lazily), so httpx's error mapping breaks in the next test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{proc.output()}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s:\n{proc.output()}")


def test_fixtures_start_an_embedded_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=4)


def test_qrs_url_runs_the_same_tests_against_a_running_server(pytester: pytest.Pytester, tmp_path: Path) -> None:
    port = free_port()
    env = server_env(port, QRS_ALLOW_RESET="true", QRS_WORKERS="1")
    server = ServerProcess([], env, tmp_path / "server.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        pytester.makepyfile(test_user=USER_TESTS)
        result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", f"--qrs-url={base}", timeout=600)
        # The marked test needs settings of its own, which a given server cannot take: skipped.
        result.assert_outcomes(passed=3, skipped=1)
    finally:
        server.stop()


def test_qrs_url_without_reset_allowed_fails_saying_how_to_fix_it(pytester: pytest.Pytester, tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess([], server_env(port, QRS_WORKERS="1"), tmp_path / "server.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        pytester.makepyfile(test_user="def test_one(qrs_server):\n    pass\n")
        result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", f"--qrs-url={base}", timeout=300)
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*answered 403*", "*QRS_ALLOW_RESET=true*"])
    finally:
        server.stop()
