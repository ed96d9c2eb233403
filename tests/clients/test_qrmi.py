"""QRMI 0.26.4, the Rust client of Slurm's quantum plugins, through its full flow (docs/qrmi.md).

QRMI's IBM client is generated from IBM's OpenAPI document, so it refuses any answer that
differs from it. Here it runs in its own cached venv (tests/clients/qrmi_venv.py), pointed at an
embedded server by its own ``{resource}_QRMI_IBM_QRS_*`` (resource type
``qiskit-runtime-service``) and ``{resource}_QRMI_IBM_QCS_*`` (``ibm-quantum-compute-service``)
variables: status, acquire (a batch and a dedicated session), target, sampler and estimator tasks
with OpenQASM 3 and QPY circuits, task status, result, logs and stop, release, status again.

Run: ``python -m pytest -m clients tests/clients/test_qrmi.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qiskit_runtime_server.shared.settings import DEFAULT_INSTANCE
from tests.clients.qrmi_venv import ensure_qrmi_venv
from tests.conftest import Deployment, embedded_server

pytestmark = pytest.mark.clients

BACKEND = "fake_manila"
SCRIPT = Path(__file__).with_name("qrmi_script.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with embedded_server(tmp_path_factory.mktemp("qrmi")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Primitive inputs as a QRMI user writes them: OpenQASM 3 text of ISA circuits, and QPY."""
    from qiskit import QuantumCircuit, qasm3
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_ibm_runtime import RuntimeEncoder
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    from tests.e2e.helpers import bell

    backend = FakeManilaV2()
    deep = QuantumCircuit(5)
    for layer in range(300):
        for q in range(5):
            deep.rx(0.1 * (layer + 1), q)
        for q in range(4):
            deep.cx(q, q + 1)
    deep.measure_all()
    deep = generate_preset_pass_manager(backend=backend, optimization_level=0).run(deep)
    circuit = bell(backend)
    unmeasured = circuit.remove_final_measurements(inplace=False)
    observable = "Z" * circuit.num_qubits
    text = qasm3.dumps(unmeasured)
    items = [
        ("sampler_qasm3", "sampler", {"pubs": [[qasm3.dumps(circuit), None, 200]], "version": 2}),
        ("sampler_qpy", "sampler", {"pubs": [[circuit, None, 200]], "version": 2}),
        # The text names physical qubits ($0, $1): the circuit it gives has qubits up to the highest one.
        (
            "estimator_qasm3",
            "estimator",
            {"pubs": [[text, "Z" * qasm3.loads(text).num_qubits, None, 0.05]], "version": 2},
        ),
        ("estimator_qpy", "estimator", {"pubs": [[unmeasured, observable, None, 0.05]], "version": 2}),
        ("slow", "sampler", {"pubs": [[deep, None, 100_000]] * 10, "version": 2}),
    ]
    path = tmp_path_factory.mktemp("qrmi-inputs") / "inputs.json"
    encoded = [{"name": n, "program_id": p, "input": json.dumps(params, cls=RuntimeEncoder)} for n, p, params in items]
    path.write_text(json.dumps(encoded))
    return path


def _qrmi_env(server: Deployment, prefix: str, mode: str) -> dict[str, str]:
    """QRMI's own variables for resource ``BACKEND`` of type ``prefix`` (``QRS`` or ``QCS``)."""
    env = {k: v for k, v in os.environ.items() if "_QRMI_" not in k}
    key = f"{BACKEND}_QRMI_IBM_{prefix}_"
    env.update(
        {
            f"{key}ENDPOINT": f"{server.base}/api/v1",
            f"{key}IAM_ENDPOINT": server.base,
            f"{key}IAM_APIKEY": "test-api-key",
            f"{key}SERVICE_CRN": DEFAULT_INSTANCE,
            f"{key}SESSION_MODE": mode,
        }
    )
    return env


@pytest.mark.parametrize(
    ("kind", "prefix", "mode"),
    [("qiskit-runtime-service", "QRS", "batch"), ("ibm-quantum-compute-service", "QCS", "dedicated")],
)
def test_qrmi_full_flow(server: Deployment, inputs: Path, kind: str, prefix: str, mode: str) -> None:
    from qiskit_ibm_runtime import RuntimeDecoder

    python = ensure_qrmi_venv()
    done = subprocess.run(
        [str(python), str(SCRIPT), kind, BACKEND, str(inputs)],
        env=_qrmi_env(server, prefix, mode),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{server.processes['server'].output()[-3000:]}"
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["status"]["status"] == "ResourceStatusCode.Online", out["status"]
    assert out["accessible"] is True and out["acquired"] is True and out["released"] is True
    assert out["status_after"]["status"] == "ResourceStatusCode.Online", out["status_after"]
    assert out["target_keys"] == ["configuration", "properties"], out["target_keys"]
    for name, task in out["tasks"].items():
        assert task["status"] == "TaskStatus.Completed", (name, task)
        assert task["status_after_stop"] == "TaskStatus.Completed", (name, task)
        result = json.loads(task["result"], cls=RuntimeDecoder)
        if name.startswith("sampler"):
            counts = next(iter(result[0].data.values())).get_counts()
            assert sum(counts.values()) == 200, (name, counts)
        else:
            assert float(result[0].data.evs) == pytest.approx(1.0, abs=0.3), (name, result[0].data.evs)
    assert out["stopped"] == "TaskStatus.Cancelled", out["stopped"]
