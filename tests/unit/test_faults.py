"""Fault injection (shared/faults.py, api/faults.py): rule checks, matching, seeded probability and
count semantics, configured rules, who may change rules, and each effect in process on fakeredis."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import fakeredis
import pytest

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.shared import faults
from qiskit_runtime_server.shared.faults import FaultRule, FaultStore, InvalidRule, matches, parse_rule
from qiskit_runtime_server.shared.models import JobStatus
from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.testing.faults import admin_url
from qiskit_runtime_server.worker.tasks import _injected_fault
from tests.unit.conftest import in_process_api

ON = {"QRS_ALLOW_FAULTS": "true"}
JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [1]}}


def redis() -> fakeredis.aioredis.FakeRedis:
    return fakeredis.aioredis.FakeRedis()


# --- rules ---------------------------------------------------------------------------------


def test_rules_get_their_effect_defaults() -> None:
    failure = parse_rule({"effect": "job_failure", "backend": "fake_*"})
    assert failure.reason_code == 1517 and faults.job_reason(failure).startswith("Error in job execution: ")
    assert faults.job_reason(parse_rule({"effect": "job_failure", "message": "boom"})) == "Error in job execution: boom"
    assert faults.job_reason(parse_rule({"effect": "job_failure", "reason_code": 1500, "message": "x"})) == "x"
    cancel = parse_rule({"effect": "job_cancel"})
    assert cancel.reason_code is None and faults.job_reason(cancel) == faults.DEFAULT_JOB_CANCEL
    assert parse_rule({"effect": "backend_status"}).status == "maintenance"
    assert parse_rule({"effect": "http_error", "status_code": 503, "method": "post"}).method == "POST"
    assert parse_rule(b'{"effect": "latency", "latency_ms": 5}').probability == 1.0


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"effect": "explode"}, "effect must be one of"),
        ({"effect": "job_failure", "route": "/jobs"}, "cannot match on route"),
        ({"effect": "http_error", "status_code": 503, "program": "sampler"}, "cannot match on program"),
        ({"effect": "latency", "latency_ms": 5, "status_code": 500}, "status_code does not apply"),
        ({"effect": "http_error", "status_code": 404}, "status_code must be one of"),
        ({"effect": "http_error"}, "status_code must be one of"),
        ({"effect": "latency"}, "latency_ms must be"),
        ({"effect": "latency", "latency_ms": 10**9}, "latency_ms must be"),
        ({"effect": "backend_status", "status": "sleepy"}, "status must be one of"),
        ({"effect": "session_expiry", "probability": 1.5}, "probability must be between 0 and 1"),
        ({"effect": "session_expiry", "count": 0}, "count must be at least 1"),
        ({"effect": "session_expiry", "id": "a b"}, "id must be"),
        ({"effect": "session_expiry", "colour": "red"}, "Invalid fault rule"),
        ({"effect": "latency", "latency_ms": "slow"}, "Invalid fault rule"),
    ],
)
def test_invalid_rules_are_refused_with_a_reason(rule: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidRule, match=words):
        parse_rule(rule)


def test_matching() -> None:
    rule = FaultRule(effect="http_error", route="/jobs*", method="POST", status_code=503)
    assert matches(rule, {"route": "/api/v1/jobs", "method": "post"})
    assert matches(rule, {"route": "/api/v1/jobs/abc/cancel", "method": "POST"})
    assert not matches(rule, {"route": "/api/v1/jobs", "method": "GET"})
    assert not matches(rule, {"route": "/api/v1/backends", "method": "POST"})
    assert matches(FaultRule(effect="latency", route="/identity/token"), {"route": "/identity/token"})
    # The full routed path works too; no route set matches every route.
    assert matches(
        FaultRule(effect="latency", route="/api/v1/backends/*/status"), {"route": "/api/v1/backends/x/status"}
    )
    assert matches(FaultRule(effect="latency"), {"route": "/anything", "method": "GET"})
    backend = FaultRule(effect="job_failure", backend="fake_*", program="sampler", instance="crn:a")
    assert matches(backend, {"backend": "fake_manila", "program": "sampler", "instance": "crn:a"})
    assert not matches(backend, {"backend": "ibm_kyiv", "program": "sampler", "instance": "crn:a"})
    assert not matches(backend, {"backend": "fake_manila", "program": "estimator", "instance": "crn:a"})
    assert not matches(backend, {"backend": "fake_manila", "program": "sampler"})  # no instance: no match


# --- probability and count ---------------------------------------------------------------------


async def test_probability_draws_follow_the_seeded_generator() -> None:
    store = FaultStore(redis(), random.Random(7))
    rule = await store.add(FaultRule(effect="session_expiry", probability=0.3))
    assert rule is not None
    fired = [await store.fire(rule) for _ in range(200)]
    expected_rng = random.Random(7)
    assert fired == [expected_rng.random() < 0.3 for _ in range(200)]
    assert 40 < sum(fired) < 80
    assert (await store.listing())[0]["fired"] == sum(fired)
    never = await store.add(FaultRule(effect="session_expiry", probability=0.0))
    assert never is not None and not any([await store.fire(never) for _ in range(50)])


async def test_count_limits_firings_across_stores_sharing_redis() -> None:
    shared = redis()
    first, second = FaultStore(shared), FaultStore(shared)
    rule = await first.add(FaultRule(effect="session_expiry", count=3))
    assert rule is not None and rule.id.startswith("f-")
    outcomes = [await (first if i % 2 else second).fire(rule) for i in range(6)]
    assert outcomes == [True, True, True, False, False, False]
    (entry,) = await first.listing()
    assert entry["remaining"] == 0 and entry["fired"] == 3 and entry["count"] == 3
    # An exhausted rule is not live any more (nothing to draw), but stays listed until removed.
    assert (await first.snapshot()).live("session_expiry", {}) == []
    assert await first.remove(rule.id) and not await first.remove(rule.id)
    assert await first.listing() == []


async def test_count_with_probability_counts_only_firings() -> None:
    store = FaultStore(redis(), random.Random(1))
    rule = await store.add(FaultRule(effect="session_expiry", probability=0.5, count=2))
    assert rule is not None
    outcomes = [await store.fire(rule) for _ in range(20)]
    assert sum(outcomes) == 2
    (entry,) = await store.listing()
    assert entry["remaining"] == 0 and entry["fired"] == 2


async def test_first_firing_tries_rules_oldest_first() -> None:
    store = FaultStore(redis())
    a = await store.add(FaultRule(effect="http_error", status_code=500, count=1))
    b = await store.add(FaultRule(effect="http_error", status_code=503))
    assert a is not None and b is not None
    event = {"route": "/api/v1/jobs", "method": "GET"}
    firings = []
    for _ in range(3):
        rules = await store.snapshot({"http_error"})
        firing = await store.first_firing(rules.live("http_error", event))
        firings.append(None if firing is None else firing.status_code)
    assert firings == [500, 503, 503]
    assert await store.clear() == 2 and await store.listing() == []


# --- configuration -----------------------------------------------------------------------------


def test_configured_rules_from_variable_and_file(tmp_path: Path) -> None:
    file = tmp_path / "faults.json"
    file.write_text(json.dumps({"faults": [{"effect": "backend_status", "backend": "fake_manila", "id": "down"}]}))
    settings = load_settings(
        {
            "QRS_FAULTS": '[{"effect": "latency", "latency_ms": 50}, {"effect": "job_cancel"}]',
            "QRS_FAULTS_FILE": str(file),
        }
    )
    rules = faults.configured_rules(settings)
    assert [r.id for r in rules] == ["config-1", "config-2", "down"]
    assert faults.enabled(settings) and not faults.enabled(load_settings({}))
    single = faults.configured_rules(load_settings({"QRS_FAULTS": '{"effect": "job_failure", "message": "m"}'}))
    assert single[0].reason_code == 1517


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"QRS_FAULTS": "[{"}, "QRS_FAULTS"),
        ({"QRS_FAULTS": '[{"effect": "latency"}]'}, "latency_ms"),
        ({"QRS_FAULTS": "[1]"}, "must be a JSON object"),
        ({"QRS_FAULTS_FILE": "/nonexistent/faults.json"}, "QRS_FAULTS_FILE"),
        ({"QRS_ALLOW_FAULTS": "sometimes"}, "QRS_ALLOW_FAULTS"),
    ],
)
def test_bad_configuration_fails_at_start_up(environ: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        create_app(load_settings(environ))


async def test_configured_rules_are_installed_once() -> None:
    shared = redis()
    store = FaultStore(shared)
    rules = faults.configured_rules(load_settings({"QRS_FAULTS": '{"effect": "session_expiry", "count": 2}'}))
    await faults.install_configured(store, rules)
    (rule,) = (await store.snapshot()).rules
    assert await store.fire(rule)
    # Another process starting (or a restart) does not refill the count or duplicate the rule.
    await faults.install_configured(FaultStore(shared), rules)
    (entry,) = await store.listing()
    assert entry["id"] == "config-1" and entry["remaining"] == 1


async def test_configured_rules_apply_without_allowing_changes() -> None:
    environ = {"QRS_FAULTS": '{"effect": "http_error", "route": "/backends", "status_code": 502}'}
    async with in_process_api(environ) as http:
        assert (await http.get("/api/v1/backends")).status_code == 502
        assert (await http.get("/admin/faults")).json()["faults"][0]["id"] == "config-1"
        assert (await http.delete("/admin/faults")).status_code == 403


def test_admin_url() -> None:
    assert admin_url("http://h:1") == "http://h:1/admin/faults"
    assert admin_url("http://h:1/") == "http://h:1/admin/faults"
    assert admin_url("http://h:1/experimental/api/v1") == "http://h:1/admin/faults"
    assert admin_url("https://h/qrs/api/v1/") == "https://h/qrs/admin/faults"


# --- access ------------------------------------------------------------------------------------


async def test_changes_are_off_by_default() -> None:
    async with in_process_api() as http:
        refused = await http.post("/admin/faults", json={"effect": "latency", "latency_ms": 1})
        assert refused.status_code == 403 and "QRS_ALLOW_FAULTS=true" in refused.json()["errors"][0]["message"]
        assert (await http.delete("/admin/faults")).status_code == 403
        assert (await http.get("/admin/faults")).json() == {"faults": []}  # listing: an operator's, open mode


@pytest.mark.parametrize(
    ("environ", "allowed"),
    [
        ({"QRS_ALLOW_FAULTS": "true"}, True),  # QRS_HOST is 127.0.0.1 by default
        ({"QRS_ALLOW_FAULTS": "true", "QRS_HOST": "localhost"}, True),
        ({"QRS_ALLOW_FAULTS": "true", "QRS_HOST": "0.0.0.0"}, False),
        ({"QRS_ALLOW_FAULTS": "TRUE", "QRS_HOST": "::1"}, True),
        ({"QRS_ALLOW_FAULTS": "force", "QRS_HOST": "0.0.0.0"}, True),
    ],
)
async def test_open_mode_allows_changes_on_loopback_or_forced(environ: dict[str, str], allowed: bool) -> None:
    async with in_process_api(environ) as http:
        answer = await http.post("/admin/faults", json={"effect": "latency", "latency_ms": 1})
        assert answer.status_code == (201 if allowed else 403)
        if not allowed:
            assert "non-loopback" in answer.json()["errors"][0]["message"]


async def test_access_control_needs_an_admin_key() -> None:
    guarded = {"QRS_API_KEYS": "alice=crn:a;ops=crn:a", "QRS_ADMIN_KEYS": "ops", "QRS_ALLOW_FAULTS": "force"}
    async with in_process_api(guarded, api_key=None) as http:
        rule = {"effect": "latency", "latency_ms": 1}
        assert (await http.post("/admin/faults", json=rule)).status_code == 401
        alice = {"Authorization": "apikey alice"}
        assert (await http.post("/admin/faults", json=rule, headers=alice)).status_code == 403
        assert (await http.get("/admin/faults", headers=alice)).status_code == 403
        ops = {"Authorization": "apikey ops"}
        added = await http.post("/admin/faults", json=rule, headers=ops)
        assert added.status_code == 201
        assert [f["id"] for f in (await http.get("/admin/faults", headers=ops)).json()["faults"]] == [
            added.json()["id"]
        ]


async def test_admin_route_crud_and_validation() -> None:
    async with in_process_api(ON) as http:
        bad = await http.post("/admin/faults", json={"effect": "job_failure", "route": "/x"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "bad_request"
        assert (await http.post("/admin/faults", content=b"{")).status_code == 400
        added = (await http.post("/admin/faults", json={"effect": "job_cancel", "id": "mine", "count": 2})).json()
        assert added["id"] == "mine" and added["created"] > 0
        (listed,) = (await http.get("/admin/faults")).json()["faults"]
        assert listed["remaining"] == 2 and listed["fired"] == 0 and listed["effect"] == "job_cancel"
        assert (await http.delete("/admin/faults/mine")).status_code == 204
        assert (await http.delete("/admin/faults/mine")).status_code == 404
        await http.post("/admin/faults", json={"effect": "job_cancel"})
        assert (await http.delete("/admin/faults")).json() == {"removed": 1}


# --- effects -----------------------------------------------------------------------------------


async def test_http_error_in_ibm_format_then_the_route_again() -> None:
    async with in_process_api(ON) as http:
        rule = {"effect": "http_error", "route": "/backends", "method": "GET", "status_code": 429, "retry_after": 2}
        await http.post("/admin/faults", json={**rule, "count": 1})
        hit = await http.get("/experimental/api/v1/backends")  # any prefix: matched as routed
        assert hit.status_code == 429 and hit.headers["retry-after"] == "2"
        body = hit.json()
        assert set(body) == {"errors", "trace"} and body["errors"][0]["code"] == "too_many_requests"
        assert (await http.get("/api/v1/backends")).status_code == 200  # count spent
        # The admin route itself is never hit, so a rule on every route can still be removed.
        await http.post("/admin/faults", json={"effect": "http_error", "status_code": 500})
        assert (await http.get("/health")).status_code == 500
        assert (await http.delete("/admin/faults")).status_code == 200
        assert (await http.get("/health")).status_code == 200


async def test_latency_delays_the_matching_route_only() -> None:
    async with in_process_api(ON) as http:
        await http.post("/admin/faults", json={"effect": "latency", "route": "/backends/*/status", "latency_ms": 300})
        started = time.monotonic()
        assert (await http.get("/api/v1/backends/fake_manila/status")).status_code == 200
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        await http.get("/api/v1/backends/fake_manila/configuration")
        assert time.monotonic() - started < 0.3


async def test_backend_status_fault_takes_the_backend_offline() -> None:
    async with in_process_api(ON) as http:
        await http.post(
            "/admin/faults", json={"effect": "backend_status", "backend": "fake_manila", "status": "internal"}
        )
        status = (await http.get("/api/v1/backends/fake_manila/status")).json()
        assert status["state"] is False and status["status"] == "internal"
        assert (await http.get("/api/v1/backends/fake_lima/status")).json()["state"] is True
        devices = {d["name"]: d for d in (await http.get("/api/v1/backends")).json()["devices"]}
        assert devices["fake_manila"]["status"] == {"name": "offline", "reason": "internal"}
        assert devices["fake_lima"]["status"]["name"] == "online"


async def test_session_expiry_closes_the_session_and_refuses_its_jobs() -> None:
    async with in_process_api(ON) as http:
        session = (await http.post("/api/v1/sessions", json={"mode": "batch", "backend": "fake_manila"})).json()
        assert session["state"] == "open"
        await http.post("/admin/faults", json={"effect": "session_expiry", "backend": "fake_manila", "count": 1})
        refused = await http.post("/api/v1/jobs", json={**JOB, "session_id": session["id"]})
        assert refused.status_code == 409
        assert refused.json()["errors"][0]["message"] == f"Session {session['id']} is closed."
        view = (await http.get(f"/api/v1/sessions/{session['id']}")).json()
        assert view["state"] == "closed" and view["accepting_jobs"] is False and view["closed_at"]
        # The count went to that session; a new one lives on.
        other = (await http.post("/api/v1/sessions", json={"mode": "batch", "backend": "fake_manila"})).json()
        assert (await http.get(f"/api/v1/sessions/{other['id']}")).json()["state"] == "open"


async def test_job_faults_end_the_job_in_the_worker() -> None:
    store = FaultStore(redis())
    ctx = {"faults": store}
    assert await _injected_fault(ctx, "sampler", "fake_manila", "crn:a") is None  # type: ignore[arg-type]
    await store.add(FaultRule(effect="job_failure", backend="fake_manila", message="boom", count=1))
    await store.add(FaultRule(effect="job_cancel", program="estimator"))
    failed = await _injected_fault(ctx, "sampler", "fake_manila", "crn:a")  # type: ignore[arg-type]
    assert failed is not None and failed.status == JobStatus.FAILED
    assert failed.fields == {"reason": "Error in job execution: boom", "reason_code": 1517}
    assert await _injected_fault(ctx, "sampler", "fake_manila", "crn:a") is None  # type: ignore[arg-type]
    cancelled = await _injected_fault(ctx, "estimator", "fake_lima", "crn:a")  # type: ignore[arg-type]
    assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
    assert cancelled.fields == {"reason": faults.DEFAULT_JOB_CANCEL}
    # Off for this worker: nothing is read.
    assert await _injected_fault({}, "estimator", "fake_lima", "crn:a") is None  # type: ignore[arg-type]


async def test_nothing_is_consulted_when_fault_injection_is_off() -> None:
    async with in_process_api() as http:
        # A rule left in Redis by someone else is ignored by a process with fault injection off.
        await FaultStore(http.app_state["pool"]).add(FaultRule(effect="http_error", status_code=503))  # type: ignore[attr-defined]
        assert (await http.get("/api/v1/backends")).status_code == 200
