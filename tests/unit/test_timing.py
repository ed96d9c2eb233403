"""IBM-like timing (docs/timing.md): the queue-time settings, the QPU duration model
(shots x (rep_delay + circuit duration) + overhead), the deferred queue entry and the wait estimate."""

from __future__ import annotations

import random
import time

import msgspec
import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter

from qiskit_runtime_server.api.dashboard.estimates import estimate
from qiskit_runtime_server.shared.backends import BackendCatalog, default_catalog
from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.shared.timing import QueueTime, TimingPolicy, parse_backend_modes
from qiskit_runtime_server.worker.engines.aer import fake_backend
from qiskit_runtime_server.worker.programs.qpu_time import (
    circuit_seconds,
    job_qpu_seconds,
    measurement_bases,
    rep_delay_seconds,
)
from tests.unit.conftest import in_process_api


@pytest.mark.parametrize(
    ("text", "kind", "mean"),
    [("fixed:3", "fixed", 3.0), ("2.5", "fixed", 2.5), ("uniform:2,10", "uniform", 6.0), ("exp:5", "exp", 5.0)],
)
def test_queue_time_forms(text: str, kind: str, mean: float) -> None:
    queue = QueueTime.parse(text)
    assert (queue.kind, queue.mean) == (kind, mean)


@pytest.mark.parametrize("text", ["gauss:1", "uniform:5,2", "fixed:-1", "exp:a", "uniform:1"])
def test_queue_time_refuses_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="queue time"):
        QueueTime.parse(text)


def test_queue_time_draws() -> None:
    rng = random.Random(1)
    uniform = [QueueTime.parse("uniform:2,10").sample(rng) for _ in range(2000)]
    assert min(uniform) >= 2 and max(uniform) <= 10 and np.mean(uniform) == pytest.approx(6, abs=0.3)
    exp = [QueueTime.parse("exp:5").sample(rng) for _ in range(4000)]
    assert min(exp) >= 0 and np.mean(exp) == pytest.approx(5, rel=0.1)
    assert QueueTime.parse("fixed:3").sample(rng) == 3


def test_seeded_policy_repeats_its_draws() -> None:
    def draws(seed: int | None) -> list[float]:
        policy = TimingPolicy("ibm", "", "exp:5", 2.0, seed)
        return [policy.draw_queue_seconds() for _ in range(5)]

    assert draws(7) == draws(7) != draws(8)


def test_per_backend_modes_match_any_name_of_the_device() -> None:
    assert parse_backend_modes(" fake_sherbrooke=ibm , fake_manila=off ") == {
        "fake_sherbrooke": "ibm",
        "fake_manila": "off",
    }
    catalog = BackendCatalog()
    only = TimingPolicy("off", "ibm_sherbrooke=ibm", "fixed:1", 2.0, None)
    assert only.backend_timed(catalog, "fake_sherbrooke") and only.backend_timed(catalog, "ibm_sherbrooke")
    assert not only.backend_timed(catalog, "fake_manila")
    assert not only.backend_timed(catalog, "mock_sherbrooke")  # a dry run is not queued for a QPU
    but = TimingPolicy("ibm", "fake_manila=off", "fixed:1", 2.0, None)
    assert but.backend_timed(catalog, "fake_sherbrooke") and not but.backend_timed(catalog, "fake_manila")
    assert (
        but.mean_queue_seconds(catalog, "fake_sherbrooke") == 1
        and but.mean_queue_seconds(catalog, "fake_manila") is None
    )


@pytest.mark.parametrize(
    "environ",
    [{"QRS_TIMING": "on"}, {"QRS_TIMING_BACKENDS": "fake_manila"}, {"QRS_QUEUE_TIME": "normal:3"}],
)
def test_malformed_timing_settings_fail_at_start_up(environ: dict[str, str]) -> None:
    with pytest.raises(msgspec.ValidationError):
        load_settings(environ)


def test_timing_is_off_by_default() -> None:
    settings = load_settings({})
    assert settings.timing == "off"
    assert not settings.timing_policy().backend_timed(BackendCatalog(), "fake_sherbrooke")


# -- the duration model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sherbrooke():  # type: ignore[no-untyped-def]
    return fake_backend("fake_sherbrooke")


def _bell(backend) -> QuantumCircuit:  # type: ignore[no-untyped-def]
    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    return transpile(circuit, backend, seed_transpiler=1)


def test_circuit_duration_is_the_longest_path_of_the_target_durations(sherbrooke) -> None:  # type: ignore[no-untyped-def]
    circuit = _bell(sherbrooke)
    seconds = circuit_seconds(circuit, sherbrooke.target)
    assert seconds == pytest.approx(circuit.estimate_duration(sherbrooke.target))
    # Bell on Eagle: single-qubit gates, an ECR and a measurement, about 1.9 µs.
    assert 1e-6 < seconds < 3e-6
    # A delay counts its own length (from the end of that qubit's measurement).
    delayed = circuit.copy()
    measured = circuit.find_bit(circuit.data[-1].qubits[0]).index
    delayed.delay(1000, measured, unit="ns")
    assert seconds + 0.9e-6 < circuit_seconds(delayed, sherbrooke.target) <= seconds + 1e-6


def test_rep_delay_from_configuration_and_options() -> None:
    conf = default_catalog().get("fake_sherbrooke").configuration
    assert conf["default_rep_delay"] == 250.0  # µs in the configuration JSON
    assert rep_delay_seconds(conf) == pytest.approx(250e-6)
    assert rep_delay_seconds(conf, {"execution": {"rep_delay": 0.0005}}) == pytest.approx(0.0005)
    assert rep_delay_seconds({}) == pytest.approx(250e-6)


def test_sampler_qpu_time_is_shots_times_rep_delay_plus_duration(sherbrooke) -> None:  # type: ignore[no-untyped-def]
    conf = default_catalog().get("fake_sherbrooke").configuration
    circuit = _bell(sherbrooke)
    per_shot = 250e-6 + circuit_seconds(circuit, sherbrooke.target)

    def model(params: dict[str, object]) -> float | None:
        return job_qpu_seconds(
            "sampler", params, conf, sherbrooke.target, default_shots=4096, default_precision=0.015625
        )

    assert model({"pubs": [[circuit]]}) == pytest.approx(4096 * per_shot)  # ~1.03 s
    assert model({"pubs": [[circuit, None, 1000]]}) == pytest.approx(1000 * per_shot)
    assert model({"pubs": [[circuit]], "options": {"default_shots": 100}}) == pytest.approx(100 * per_shot)
    assert model({"pubs": [[circuit], [circuit, None, 10]]}) == pytest.approx(4106 * per_shot)
    slow = {"pubs": [[circuit, None, 1000]], "options": {"execution": {"rep_delay": 0.001}}}
    assert model(slow) == pytest.approx(1000 * (0.001 + per_shot - 250e-6))
    # Parameter bindings: each one runs every shot.
    theta = Parameter("t")
    param = QuantumCircuit(1, 1)
    param.rx(theta, 0)
    param.measure(0, 0)
    isa = transpile(param, sherbrooke, seed_transpiler=1)
    values = np.zeros((3, 4, 1))
    per = 250e-6 + circuit_seconds(isa.assign_parameters([0.1]), sherbrooke.target)
    assert model({"pubs": [[isa, values, 10]]}) == pytest.approx(12 * 10 * per)


def test_estimator_qpu_time_counts_bases_and_precision_shots(sherbrooke) -> None:  # type: ignore[no-untyped-def]
    conf = default_catalog().get("fake_sherbrooke").configuration
    circuit = _bell(sherbrooke).remove_final_measurements(inplace=False)
    per_shot = 250e-6 + circuit_seconds(circuit, sherbrooke.target)
    # ZZ and ZI share a basis, XX needs its own: two circuits per binding.
    observable = {"ZZ": 1.0, "ZI": 0.5, "XX": 1.0}
    assert measurement_bases([observable]) == 2 and measurement_bases([{"II": 1.0}]) == 1
    labels = {"I" * 125 + label: c for label, c in observable.items()}  # on the 127 physical qubits
    seconds = job_qpu_seconds(
        "estimator",
        {"pubs": [[circuit, labels, None, 0.05]]},
        conf,
        sherbrooke.target,
        default_shots=4096,
        default_precision=0.015625,
    )
    assert seconds == pytest.approx(2 * 400 * per_shot)  # ceil(1 / 0.05**2) = 400 shots per basis


def test_programs_without_a_model_fall_back(sherbrooke) -> None:  # type: ignore[no-untyped-def]
    conf = default_catalog().get("fake_sherbrooke").configuration
    kw = {"default_shots": 4096, "default_precision": 0.015625}
    assert job_qpu_seconds("executor", {}, conf, sherbrooke.target, **kw) is None  # type: ignore[arg-type]
    assert job_qpu_seconds("sampler", {"pubs": [["not a circuit"]]}, conf, sherbrooke.target, **kw) is None  # type: ignore[arg-type]


# -- the API side ----------------------------------------------------------------------------


def test_wait_estimate_adds_the_mean_queue_time() -> None:
    est = estimate({"a": 3}, {"a": 1}, {"a": [2.0]}, 2, {"a": 5.0})
    assert est.wait_seconds == pytest.approx((3 * 2 + 1) / 2)
    assert est.wait_for("a") == pytest.approx(5 + 3.5) and est.wait_for("b") == pytest.approx(3.5)
    assert est.turnaround("a") == pytest.approx(5 + 3.5 + 2)
    assert estimate({}, {}, {}, 0, {"a": 5.0}).wait_for("a") is None  # no worker: unknown


_SAMPLER = b'{"program_id": "sampler", "backend": "%s", "params": {"pubs": [["c"]], "version": 2}}'


async def test_a_timed_job_is_deferred_by_its_queue_time() -> None:
    environ = {"QRS_TIMING_BACKENDS": "fake_manila=ibm", "QRS_QUEUE_TIME": "fixed:30", "QRS_QPU_OVERHEAD": "1.5"}
    async with in_process_api(environ) as http:
        state = http.app_state  # type: ignore[attr-defined]
        pool, queue = state["pool"], state["settings"].queue_name
        ids = {}
        for backend in ("fake_manila", "fake_lima"):
            answer = await http.post("/api/v1/jobs", content=_SAMPLER % backend.encode())
            assert answer.status_code == 200, answer.text
            ids[backend] = answer.json()["id"]
        now_ms = time.time() * 1000
        timed = await state["store"].get(ids["fake_manila"])
        assert (timed.queue_seconds, timed.qpu_overhead) == (30.0, 1.5)
        assert await pool.zscore(queue, ids["fake_manila"]) == pytest.approx(now_ms + 30_000, abs=2_000)
        plain = await state["store"].get(ids["fake_lima"])
        assert (plain.queue_seconds, plain.qpu_overhead) == (None, None)
        assert await pool.zscore(queue, ids["fake_lima"]) == pytest.approx(now_ms, abs=2_000)
        # Waiting out its queue time, the job is pending: length_queue (the client's pending_jobs).
        status = (await http.get("/api/v1/backends/fake_manila/status")).json()
        assert status["length_queue"] == 1
        view = (await http.get(f"/api/v1/jobs/{ids['fake_manila']}")).json()
        assert view["status"] == "Queued" and view["estimated_running_time_seconds"] is None
        metrics = (await http.get(f"/api/v1/jobs/{ids['fake_manila']}/metrics")).json()
        assert (
            metrics["timing"]["queue_seconds"] == 30.0
            and "timing" not in (await http.get(f"/api/v1/jobs/{ids['fake_lima']}/metrics")).json()
        )
