"""IBM device names, operator aliases, calibration ids, mock backends and ``dry_run``.

All with the unmodified client over real HTTP: the shared deployments (embedded and split) for
what needs no configuration, and an embedded server started with ``QRS_BACKEND_ALIASES`` for
the operator aliases.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.transpiler import generate_preset_pass_manager

from tests.conftest import Deployment, embedded_server
from tests.e2e.helpers import bell, long_circuit

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")

ALIASES = "lab_device=fake_manila,big_qpu=ibm_sherbrooke"


def _headers(base: str) -> dict[str, str]:
    token = httpx.post(f"{base}/identity/token", data={"apikey": "test-api-key"}).json()
    return {"Authorization": f"Bearer {token['access_token']}", "Content-Type": "application/json"}


def _listing(base: str, include_mocks: bool) -> list[dict]:
    params = {"include_mocks": "True"} if include_mocks else {}
    response = httpx.get(f"{base}/api/v1/backends", params=params, headers=_headers(base))
    assert response.status_code == 200, response.text
    return response.json()["devices"]


def _assert_ibm_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors", "trace"}
    assert set(body["errors"][0]) == {"code", "message", "more_info"}


def _sweep(backend, measure: bool = True) -> tuple[QuantumCircuit, np.ndarray]:  # type: ignore[no-untyped-def]
    """A one-parameter Bell-like circuit, ISA for ``backend``, and parameter values of shape (3, 2, 1)."""
    theta = Parameter("t")
    qc = QuantumCircuit(2)
    qc.rx(theta, 0)
    qc.cx(0, 1)
    if measure:
        qc.measure_all()
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    return isa, np.linspace(0, np.pi, 6).reshape(3, 2, 1)


# --- IBM device names -----------------------------------------------------------------------


def test_ibm_device_name_runs_a_sampler_job(service) -> None:
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("ibm_sherbrooke")
    assert backend.name == "ibm_sherbrooke"
    assert backend.num_qubits == 127
    job = SamplerV2(mode=backend).run([bell(backend)], shots=2000)
    counts = job.result()[0].data.meas.get_counts()
    assert counts.get("00", 0) + counts.get("11", 0) > 0.85 * 2000
    assert counts.get("01", 0) + counts.get("10", 0) > 0  # the device's noise model
    assert job.backend().name == "ibm_sherbrooke"
    assert service.jobs(backend_name="ibm_sherbrooke", limit=5)[0].job_id() == job.job_id()
    # Older devices keep their own IBM names (ibmq_*), as in the fake backend's configuration.
    assert service.backend("ibmq_manila").num_qubits == 5


def test_least_busy_picks_a_primary_name(deployment, service) -> None:
    listing = _listing(deployment.base, include_mocks=True)
    # Every name is online (IBM's schema has online, paused, offline only); an alias says what it
    # names. The client sorts the online non-mock entries stably by queue length, and the names of a
    # device share its queue length: primary names listed first make it pick one of them.
    assert {d["status"]["name"] for d in listing} == {"online"}
    real = [d for d in listing if d.get("class") != "mock"]
    primary = [i for i, d in enumerate(real) if "alias_of" not in d]
    assert all(real[i]["name"].startswith("fake_") for i in primary)
    assert primary == list(range(len(primary)))
    by_name = {d["name"]: d for d in listing}
    assert by_name["ibm_sherbrooke"]["status"]["reason"] == "another name of fake_sherbrooke"
    assert by_name["ibm_sherbrooke"]["alias_of"] == "fake_sherbrooke"
    assert by_name["ibm_sherbrooke"]["queue_length"] == by_name["fake_sherbrooke"]["queue_length"]
    for _ in range(3):
        chosen = service.least_busy()
        assert chosen.name.startswith("fake_") and not chosen.is_mock
    assert service.least_busy(min_num_qubits=127).name.startswith("fake_")


# --- calibration ids ------------------------------------------------------------------------


def test_calibration_id_is_stable_pinnable_and_checked(deployment, service) -> None:
    from qiskit.providers.exceptions import QiskitBackendNotFoundError
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_manila")
    calibration_id = backend.properties().calibration_id
    assert isinstance(calibration_id, str) and len(calibration_id) >= 8
    # The same snapshot under every name of the device, in the listing and on every request.
    entries = {d["name"]: d for d in _listing(deployment.base, include_mocks=True)}
    assert entries["fake_manila"]["calibration_id"] == calibration_id
    assert entries["ibmq_manila"]["calibration_id"] == calibration_id
    assert entries["fake_sherbrooke"]["calibration_id"] != calibration_id
    assert service.backend("ibmq_manila").properties().calibration_id == calibration_id

    pinned = service.backend("fake_manila", calibration_id=calibration_id)
    assert pinned.calibration_id == calibration_id
    assert pinned.properties(refresh=True).calibration_id == calibration_id
    job = SamplerV2(mode=pinned).run([bell(pinned)], shots=100)
    assert job.result()[0].data.meas.num_shots == 100
    headers = _headers(deployment.base)
    view = httpx.get(f"{deployment.base}/api/v1/jobs/{job.job_id()}", headers=headers).json()
    assert view["calibration_id"] == calibration_id

    with pytest.raises(QiskitBackendNotFoundError):
        service.backend("fake_manila", calibration_id="no-such-id")
    base = f"{deployment.base}/api/v1/backends/fake_manila"
    _assert_ibm_error(httpx.get(f"{base}/configuration", params={"calibration_id": "no-such-id"}, headers=headers), 404)
    _assert_ibm_error(httpx.get(f"{base}/properties", params={"calibration_id": "no-such-id"}, headers=headers), 404)
    ok = httpx.get(f"{base}/configuration", params={"calibration_id": calibration_id}, headers=headers)
    assert ok.status_code == 200 and ok.json()["backend_name"] == "fake_manila"
    body = (
        '{"program_id": "sampler", "backend": "fake_manila", "calibration_id": "no-such-id", '
        '"params": {"pubs": [[]]}}'
    )
    _assert_ibm_error(httpx.post(f"{deployment.base}/api/v1/jobs", content=body, headers=headers), 404)


# --- mock backends and dry_run --------------------------------------------------------------


def test_mock_backends_are_listed_only_with_include_mocks(deployment, service) -> None:
    plain = {d["name"] for d in _listing(deployment.base, include_mocks=False)}
    assert not any(name.startswith("mock_") for name in plain)
    mocks = {d["name"]: d for d in _listing(deployment.base, include_mocks=True) if d.get("class") == "mock"}
    assert "mock_sherbrooke" in mocks and "mock_manila" in mocks
    assert all(name.startswith("mock_") for name in mocks)
    assert not any(b.name.startswith("mock_") for b in service.backends())
    listed = {b.name: b for b in service.backends(include_mocks=True)}
    assert listed["mock_sherbrooke"].is_mock
    assert service.backend("mock_sherbrooke").num_qubits == 127


def test_api_version_2024_01_01_lists_names_and_defaults_is_null(deployment, service) -> None:
    """qiskit-ibm-runtime 0.40's dialect over real HTTP, next to the installed client's."""
    headers = _headers(deployment.base)
    url = f"{deployment.base}/api/v1/backends"
    old = httpx.get(url, headers={**headers, "IBM-API-Version": "2024-01-01"}).json()["devices"]
    for version in ("2025-05-01", "2026-04-15"):
        current = httpx.get(url, headers={**headers, "IBM-API-Version": version}).json()["devices"]
        assert old == [d["name"] for d in current]
    assert "ibm_sherbrooke" in old and all(isinstance(name, str) for name in old)
    # What 0.40 asks on the first attribute its backend object lacks; the installed client
    # no longer does, and keeps reading objects.
    defaults = httpx.get(f"{url}/ibm_sherbrooke/defaults", headers={**headers, "IBM-API-Version": "2024-01-01"})
    assert defaults.status_code == 200 and defaults.json() is None
    assert {b.name for b in service.backends()} == set(old)


# Seconds a dry run of ``long_circuit`` may take, queueing and the client's polling included.
DRY_RUN_BOUND = 60


def _usage(service) -> float:  # type: ignore[no-untyped-def]
    return float(service.usage()["usage_consumed_seconds"])


def test_dry_run_sampler_returns_random_data_of_the_right_shapes_fast(service) -> None:
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_sherbrooke")
    isa, values = _sweep(backend)
    # A circuit that takes tens of seconds to simulate: a dry run must not simulate it.
    slow = long_circuit(backend)
    before = _usage(service)
    started = time.monotonic()
    job = SamplerV2(mode=backend).run([(isa, values), slow], shots=1000, dry_run=True)
    result = job.result()
    elapsed = time.monotonic() - started
    # Simulating ``slow`` takes tens of seconds here; the bound only has to hold on a loaded
    # machine. The counts below are what shows that nothing was simulated.
    assert elapsed < DRY_RUN_BOUND, elapsed
    assert job.backend().name == "mock_sherbrooke"
    first, second = result[0].data.meas, result[1].data.meas
    assert (first.shape, first.num_shots, first.num_bits) == ((3, 2), 1000, 2)
    assert (second.shape, second.num_shots, second.num_bits) == ((), 1000, 12)
    assert len(second.get_counts()) > 100  # uniformly random, not a simulation
    assert result.metadata["dry_run"] is True
    assert job.metrics()["usage"]["quantum_seconds"] == 0
    assert _usage(service) == before


def test_dry_run_estimator_shapes(service) -> None:
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_ibm_runtime import EstimatorV2

    backend = service.backend("ibm_sherbrooke")
    isa, values = _sweep(backend, measure=False)
    observable = SparsePauliOp("ZZ").apply_layout(isa.layout)
    job = EstimatorV2(mode=backend).run([(isa, [[observable]], values)], dry_run=True)
    data = job.result()[0].data
    assert job.backend().name == "mock_sherbrooke"
    assert np.shape(data.evs) == (3, 2) and np.shape(data.stds) == (3, 2)
    assert np.all(np.abs(data.evs) <= 1)
    assert job.metrics()["usage"]["quantum_seconds"] == 0


def test_dry_run_executor_sampler(service) -> None:
    from qiskit_ibm_runtime.executor_sampler import Sampler

    backend = service.backend("fake_sherbrooke")
    isa, values = _sweep(backend)
    slow = long_circuit(backend)
    before = _usage(service)
    started = time.monotonic()
    job = Sampler(mode=backend).run([(isa, values), slow], shots=64, dry_run=True)
    result = job.result()
    assert time.monotonic() - started < DRY_RUN_BOUND
    assert job.backend().name == "mock_sherbrooke"
    first, second = result[0].data.meas, result[1].data.meas
    assert (first.shape, first.num_shots, first.num_bits) == ((3, 2), 64, 2)
    assert (second.shape, second.num_shots, second.num_bits) == ((), 64, 12)
    assert job.metrics()["usage"]["quantum_seconds"] == 0
    assert _usage(service) == before


def test_dry_run_inside_a_session(deployment, service) -> None:
    """A session on a device takes the dry runs of its mock too (the client sends them with the
    session's id), and jobs sent under another name of the session's device."""
    import json

    from qiskit_ibm_runtime import RuntimeEncoder, SamplerV2, Session

    backend = service.backend("ibm_sherbrooke")
    with Session(backend=backend) as session:
        sampler = SamplerV2(mode=session)
        dry = sampler.run([bell(backend)], shots=20, dry_run=True)
        assert dry.backend().name == "mock_sherbrooke"
        assert dry.result()[0].data.meas.num_shots == 20
        real = sampler.run([bell(backend)], shots=20)
        assert real.result()[0].data.meas.num_shots == 20
        assert dry.session_id == real.session_id == session.session_id
        params = {"pubs": [(bell(backend), None, 20)], "version": 2, "support_qiskit": True}
        body = {"program_id": "sampler", "backend": "fake_sherbrooke", "session_id": session.session_id}
        body["params"] = params
        url, headers = f"{deployment.base}/api/v1/jobs", _headers(deployment.base)
        other_name = httpx.post(url, content=json.dumps(body, cls=RuntimeEncoder), headers=headers)
        assert other_name.status_code == 200, other_name.text
        body["backend"] = "fake_manila"
        other_device = httpx.post(url, content=json.dumps(body, cls=RuntimeEncoder), headers=headers)
        _assert_ibm_error(other_device, 400)


# --- operator aliases (QRS_BACKEND_ALIASES) -------------------------------------------------


@pytest.fixture(scope="module")
def aliased(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with embedded_server(tmp_path_factory.mktemp("aliases"), QRS_BACKEND_ALIASES=ALIASES) as deployment:
        yield deployment


@pytest.fixture
def aliased_service(aliased: Deployment, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for key in ("QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL", "QISKIT_FUNCTIONS_EXPERIMENTAL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in aliased.client_env().items():
        monkeypatch.setenv(key, value)
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService()


def test_alias_from_the_environment_runs_jobs(aliased, aliased_service) -> None:
    from qiskit_ibm_runtime import SamplerV2

    backend = aliased_service.backend("lab_device")
    assert backend.name == "lab_device" and backend.num_qubits == 5
    job = SamplerV2(mode=backend).run([bell(backend)], shots=500)
    assert sum(job.result()[0].data.meas.get_counts().values()) == 500
    assert job.backend().name == "lab_device"
    # An alias of an alias-free IBM name works too, and dry_run finds the alias's mock.
    big = aliased_service.backend("big_qpu")
    assert big.num_qubits == 127
    dry = SamplerV2(mode=backend).run([bell(backend)], shots=10, dry_run=True)
    assert dry.backend().name == "mock_device"
    assert dry.result()[0].data.meas.num_shots == 10
    listing = _listing(aliased.base, include_mocks=True)
    names = [d["name"] for d in listing]
    assert "lab_device" in names and "big_qpu" in names
    assert len(names) == len(set(names))
    for _ in range(3):
        chosen = aliased_service.least_busy()
        assert chosen.name.startswith("fake_")
