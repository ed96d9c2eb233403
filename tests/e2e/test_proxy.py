"""Proxy mode end to end: the real client, configured by environment variables only, reaches
the server through ``CONNECT`` as if it were talking to IBM's hosts; other hosts are refused."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, free_port, server_env, wait_ready

pytestmark = pytest.mark.e2e

INSTANCE = "crn:v1:bluemix:public:quantum-computing:us-east:a/local:local-instance::"

# Run by the client's own interpreter in a clean environment: nothing but the recipe's variables.
CLIENT_SCRIPT = r"""
import json
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import EstimatorV2, QiskitRuntimeService, SamplerV2

service = QiskitRuntimeService()
backend = service.backend("fake_sherbrooke")
pm = generate_preset_pass_manager(backend=backend, optimization_level=1)
bell = QuantumCircuit(2)
bell.h(0)
bell.cx(0, 1)
measured = bell.copy()
measured.measure_all()
counts = SamplerV2(mode=backend).run([pm.run(measured)], shots=400).result()[0].data.meas.get_counts()
isa = pm.run(bell)
zz = SparsePauliOp("ZZ").apply_layout(isa.layout)
ev = float(EstimatorV2(mode=backend).run([(isa, zz)]).result()[0].data.evs)
print(json.dumps({"counts": counts, "zz": ev, "url": service._account.url, "jobs": len(service.jobs(limit=5))}))
"""


def _recipe(proxy_port: int, bundle: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QISKIT_IBM", "QRS_"))}
    for name in ("IAM_URL", "GLOBAL_SEARCH_URL", "GLOBAL_CATALOG_URL", "HTTP_PROXY", "http_proxy", "https_proxy"):
        env.pop(name, None)
    env.update(
        {
            "QISKIT_IBM_TOKEN": "proxy-test-key",
            "QISKIT_IBM_INSTANCE": INSTANCE,
            "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
            "REQUESTS_CA_BUNDLE": str(bundle),
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    return env


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, ServerProcess]]:
    """The embedded server with proxy mode on (``--proxy-port``): (proxy port, CA folder, process)."""
    folder = tmp_path_factory.mktemp("proxy")
    port, proxy_port = free_port(), free_port()
    env = server_env(port, QRS_PROXY_DIR=str(folder / "ca"))
    proc = ServerProcess(["--proxy-port", str(proxy_port)], env, folder / "server.log").start()
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield proxy_port, folder / "ca", proc
    finally:
        proc.stop()


def _connect(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        return sock.recv(4096)


def test_the_recipe_is_printed_with_the_bundle(proxied: tuple[int, Path, ServerProcess]) -> None:
    proxy_port, ca_dir, proc = proxied
    out = proc.output()
    assert f"export HTTPS_PROXY=http://127.0.0.1:{proxy_port}" in out
    assert f"export REQUESTS_CA_BUNDLE={ca_dir / 'ca-bundle.pem'}" in out
    assert f"export SSL_CERT_FILE={ca_dir / 'ca-bundle.pem'}" in out  # QRMI (rustls, system store)
    assert f"export QISKIT_IBM_INSTANCE='{INSTANCE}'" in out
    assert "export NO_PROXY=127.0.0.1,localhost" in out


def test_real_client_by_environment_only(proxied: tuple[int, Path, ServerProcess]) -> None:
    proxy_port, ca_dir, _ = proxied
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT],
        env=_recipe(proxy_port, ca_dir / "ca-bundle.pem"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["url"].startswith("https://") and "cloud.ibm.com" in result["url"]
    counts = result["counts"]
    assert sum(counts.values()) == 400 and counts.get("00", 0) + counts.get("11", 0) > 300
    assert 0.7 < result["zz"] <= 1.05
    assert result["jobs"] >= 2


def test_other_hosts_and_ports_are_refused(proxied: tuple[int, Path, ServerProcess]) -> None:
    proxy_port = proxied[0]
    assert _connect(proxy_port, b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").startswith(
        b"HTTP/1.1 403"
    )
    assert _connect(proxy_port, b"CONNECT iam.cloud.ibm.com:22 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
    assert _connect(proxy_port, b"GET http://pypi.org/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert _connect(proxy_port, b"CONNECT nonsense\r\n\r\n").startswith(b"HTTP/1.1 405")


def test_untrusting_client_fails_the_handshake(proxied: tuple[int, Path, ServerProcess]) -> None:
    """Without our CA in its trust store a client refuses the proxy's certificate."""
    proxy_port = proxied[0]
    with pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
        httpx.get(
            "https://iam.cloud.ibm.com/", proxy=f"http://127.0.0.1:{proxy_port}", verify=ssl.create_default_context()
        )


def test_catalog_host_reaches_the_catalog(proxied: tuple[int, Path, ServerProcess]) -> None:
    proxy_port, ca_dir, _ = proxied
    verify = ssl.create_default_context(cafile=str(ca_dir / "ca-bundle.pem"))
    with httpx.Client(proxy=f"http://127.0.0.1:{proxy_port}", verify=verify, timeout=20) as client:
        token = client.post(
            "https://iam.cloud.ibm.com/identity/token",
            data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "k"},
        ).json()["access_token"]
        plan = client.get(
            "https://globalcatalog.cloud.ibm.com/api/v1/some-plan", headers={"Authorization": f"Bearer {token}"}
        )
        assert plan.status_code == 200 and plan.json()["id"] == "some-plan"
        backends = client.get(
            "https://us-east.quantum-computing.cloud.ibm.com/api/v1/backends",
            headers={"Authorization": f"Bearer {token}", "Service-CRN": INSTANCE},
        )
        assert backends.status_code == 200 and backends.json()["devices"]


@pytest.mark.redis
def test_api_subcommand_serves_the_proxy(real_redis_url: str, tmp_path: Path) -> None:
    port, proxy_port = free_port(), free_port()
    env = server_env(
        port,
        REDIS_URL=real_redis_url,
        QRS_QUEUE_NAME=f"qrs:proxy-queue:{port}",
        QRS_PROXY_PORT=str(proxy_port),
        QRS_PROXY_DIR=str(tmp_path / "ca"),
    )
    api = ServerProcess(["api"], env, tmp_path / "api.log").start()
    worker = ServerProcess(["worker"], env, tmp_path / "worker.log").start()
    try:
        wait_ready(f"http://127.0.0.1:{port}", api)
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT],
            env=_recipe(proxy_port, tmp_path / "ca" / "ca-bundle.pem"),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1])["zz"] > 0.7
    finally:
        worker.stop()
        api.stop()
