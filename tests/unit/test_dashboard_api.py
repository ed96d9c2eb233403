"""The dashboard's analytics and queue API (``/dashboard/api``): aggregates kept by the store's
transitions, wait estimates, and the same instance isolation as the runtime API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from qiskit_runtime_server.api.dashboard.estimates import estimate
from qiskit_runtime_server.shared import stats, workers
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.store import JobStore
from tests.unit.conftest import in_process_api

A = "crn:v1:bluemix:public:quantum-computing:us-east:a/a:inst-a::"
B = "crn:v1:bluemix:public:quantum-computing:us-east:a/b:inst-b::"
GUARDED = {"QRS_API_KEYS": f"key-a={A};key-b={B}", "QRS_ADMIN_KEYS": "ops-key"}


async def _job(store: JobStore, job_id: str, instance: str = A, backend: str = "fake_manila", end: str = "") -> None:
    """A job created, started on worker w1 and (with ``end``) finished, through the store's transitions."""
    await store.create(
        JobRecord(id=job_id, program_id="sampler", backend=backend, instance=instance, created=time.time() - 2),
        b'{"pubs": [], "options": {"default_shots": 77}}',
    )
    if end:
        await store.start(job_id, "w1", 1)
        status = JobStatus(end)
        await store.finish(
            job_id, status, b"{}", reason="boom" if status == JobStatus.FAILED else None, quantum_seconds=1.5
        )


@pytest.fixture
async def guarded() -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """Clients of one guarded API for the keys of instance A, instance B and the operator."""
    async with in_process_api(GUARDED, api_key=None) as http:
        clients = {}
        for name, key in (("a", "key-a"), ("b", "key-b"), ("ops", "ops-key")):
            clients[name] = httpx.AsyncClient(
                transport=http._transport, base_url="http://localhost", headers={"Authorization": f"apikey {key}"}
            )
            clients[name].app_state = http.app_state  # type: ignore[attr-defined]
        yield clients


async def test_overview_and_distribution_follow_state_changes(client: httpx.AsyncClient) -> None:
    store = client.app_state["store"]  # type: ignore[attr-defined]
    await _job(store, "j1", end="Completed")
    await _job(store, "j2", end="Failed")
    await _job(store, "j3")
    await _job(store, "j4", backend="fake_lima")
    await store.start("j4", "w1", 1)
    overview = (await client.get("/dashboard/api/overview")).json()
    assert overview["jobs"] == {"Queued": 1, "Running": 1, "Completed": 1, "Failed": 1, "Cancelled": 0}
    assert overview["this_hour"]["created"] == 4 and overview["this_hour"]["Completed"] == 1
    distribution = (await client.get("/dashboard/api/status-distribution")).json()
    assert distribution["by_backend"]["fake_lima"]["Running"] == 1
    assert distribution["by_backend"]["fake_manila"]["Queued"] == 1
    await store.cancel("j3")
    await store.delete("j1")
    overview = (await client.get("/dashboard/api/overview")).json()
    assert overview["jobs"] == {"Queued": 0, "Running": 1, "Completed": 0, "Failed": 1, "Cancelled": 1}


async def test_trends_backends_percentiles_and_usage(client: httpx.AsyncClient) -> None:
    store = client.app_state["store"]  # type: ignore[attr-defined]
    begun = time.time()
    for i in range(3):
        await _job(store, f"c{i}", end="Completed")
    await _job(store, "f0", end="Failed")
    # Each job waited 2 s (created 2 s in the past) plus however long its own start took.
    longest_wait = 2 + time.time() - begun
    trend = (await client.get("/dashboard/api/trends?unit=hour&count=3")).json()
    assert len(trend["buckets"]) == 3
    assert trend["buckets"][-1]["created"] == 4 and trend["buckets"][-1]["Completed"] == 3
    assert trend["buckets"][-1]["started"] == 4
    days = (await client.get("/dashboard/api/trends?unit=day&count=7")).json()
    assert days["buckets"][-1]["Failed"] == 1
    (row,) = (await client.get("/dashboard/api/backends?days=1")).json()["backends"]
    assert row["backend"] == "fake_manila" and row["success_rate"] == 0.75 and row["busy_share"] == 1.0
    assert row["ended"] == {"Completed": 3, "Failed": 1, "Cancelled": 0}
    pct = (await client.get("/dashboard/api/percentiles?days=1")).json()
    assert pct["samples"] == {"wait": 4, "run": 4}
    # The histogram holds the waits within 25 %.
    assert 1.5 <= pct["wait_seconds"]["p50"] <= 1.3 * longest_wait
    usage = (await client.get("/dashboard/api/usage")).json()
    assert usage["instances"] == {A: 6.0} and usage["total"] == 6.0
    assert (await client.get("/dashboard/api/trends?unit=week")).status_code == 400
    assert (await client.get("/dashboard/api/usage?month=13")).json()["errors"][0]["code"]


async def test_jobs_table_filters_and_detail(client: httpx.AsyncClient) -> None:
    store = client.app_state["store"]  # type: ignore[attr-defined]
    await _job(store, "ok", end="Completed")
    await _job(store, "bad", end="Failed")
    await _job(store, "lima", backend="fake_lima")
    listing = (await client.get("/dashboard/api/jobs")).json()
    assert listing["count"] == 3
    failed = (await client.get("/dashboard/api/jobs?status=Failed")).json()
    assert [j["id"] for j in failed["jobs"]] == ["bad"] and failed["jobs"][0]["reason"] == "boom"
    lima = (await client.get("/dashboard/api/jobs?backend=fake_lima")).json()
    assert [j["id"] for j in lima["jobs"]] == ["lima"]
    both = (await client.get("/dashboard/api/jobs?backend=fake_manila&status=Completed")).json()
    assert [j["id"] for j in both["jobs"]] == ["ok"]
    assert (await client.get("/dashboard/api/jobs?id=bad")).json()["count"] == 1
    detail = (await client.get("/dashboard/api/jobs/bad")).json()
    assert detail["reason"] == "boom" and detail["worker"] == "w1" and detail["attempts"] == 1
    assert detail["options"] == {"default_shots": 77} and detail["running"] and detail["finished"]
    assert (await client.get("/dashboard/api/jobs/nope")).status_code == 404


async def test_queue_view_estimates_the_wait(client: httpx.AsyncClient) -> None:
    store = client.app_state["store"]  # type: ignore[attr-defined]
    redis = client.app_state["pool"]  # type: ignore[attr-defined]
    for i in range(2):
        await _job(store, f"done{i}", end="Completed")
    idle = (await client.get("/dashboard/api/queue")).json()["backends"]
    assert [(r["backend"], r["queued"]) for r in idle] == [("fake_manila", 0)]  # known from its recent runs
    for i in range(4):
        await _job(store, f"q{i}")
    queue = (await client.get("/dashboard/api/queue")).json()
    assert queue["summary"]["queued"] == 4 and queue["summary"]["workers"] == 0
    assert queue["summary"]["estimated_wait_seconds"] is None  # no worker: unknown
    assert queue["summary"]["oldest_queued_age_seconds"] >= 1.5
    info = workers.WorkerInfo(id="w1", host="h", pid=1, device="CPU", queue="q", started=1.0, heartbeat=time.time())
    await workers.publish(redis, info, 30)
    await workers.publish(redis, msgspec.structs.replace(info, id="w2"), 30)
    queue = (await client.get("/dashboard/api/queue")).json()
    (row,) = queue["backends"]
    mean = row["mean_run_seconds"]
    assert mean is not None and row["queued"] == 4
    assert queue["summary"]["estimated_wait_seconds"] == pytest.approx(4 * mean / 2)
    status = (await client.get("/api/v1/backends/fake_manila/status")).json()
    assert status["length_queue"] == 4
    assert status["estimated_wait_seconds"] == pytest.approx(4 * mean / 2, abs=1e-3)


def test_estimate_method() -> None:
    # 3 queued 2 s jobs and one running, 2 workers: (3*2 + 1*2/2) / 2 = 3.5 s; unknown backend: mean.
    est = estimate({"a": 3, "c": 1}, {"a": 1}, {"a": [2.0, 2.0], "b": [4.0]}, 2)
    assert est.wait_seconds == pytest.approx((3 * 2 + 1 + 3) / 2)
    assert est.turnaround("a") == pytest.approx(est.wait_seconds + 2)  # type: ignore[operator]
    assert estimate({"a": 1}, {}, {}, 0).wait_seconds is None


def test_percentiles_from_histogram() -> None:
    values = [0.05 * (i + 1) for i in range(200)]  # 0.05 .. 10 s
    histogram: dict[int, float] = {}
    for v in values:
        histogram[stats.h_index(v)] = histogram.get(stats.h_index(v), 0) + 1
    got = stats.percentiles(histogram, (0.5, 0.95))
    assert got["p50"] == pytest.approx(5.0, rel=0.25) and got["p95"] == pytest.approx(9.5, rel=0.25)
    assert stats.percentiles({}, (0.5,)) == {"p50": None}


async def test_instance_key_sees_only_its_instance(guarded: dict[str, httpx.AsyncClient]) -> None:
    store = guarded["a"].app_state["store"]  # type: ignore[attr-defined]
    await _job(store, "a-job", instance=A, end="Failed")
    await _job(store, "b-job", instance=B, end="Completed")
    await _job(store, "b-queued", instance=B)
    a, b, ops = guarded["a"], guarded["b"], guarded["ops"]
    assert [j["id"] for j in (await a.get("/dashboard/api/jobs")).json()["jobs"]] == ["a-job"]
    assert {j["id"] for j in (await ops.get("/dashboard/api/jobs")).json()["jobs"]} == {"a-job", "b-job", "b-queued"}
    assert (await a.get("/dashboard/api/jobs?id=b-job")).json()["jobs"] == []
    failed_here = (await a.get("/dashboard/api/jobs?status=Failed&backend=fake_manila")).json()
    assert [j["id"] for j in failed_here["jobs"]] == ["a-job"]
    assert (await b.get("/dashboard/api/jobs?status=Failed&backend=fake_manila")).json()["count"] == 0
    assert (await b.get("/dashboard/api/jobs?status=Queued&backend=fake_manila")).json()["count"] == 1
    assert (await a.get("/dashboard/api/jobs/b-job")).status_code == 404
    assert (await a.get(f"/dashboard/api/jobs?instance={B}")).status_code == 403
    assert (await a.get(f"/dashboard/api/overview?instance={B}")).status_code == 403
    assert (await a.get("/dashboard/api/overview")).json()["jobs"]["Completed"] == 0
    assert (await b.get("/dashboard/api/overview")).json()["jobs"]["Completed"] == 1
    assert (await ops.get("/dashboard/api/overview")).json()["jobs"]["Queued"] == 1
    assert (await a.get("/dashboard/api/usage")).json()["instances"] == {A: 1.5}
    assert set((await ops.get("/dashboard/api/usage")).json()["instances"]) == {A, B}
    assert (await a.get("/dashboard/api/status-distribution")).json()["total"]["Queued"] == 0
    assert (await a.get("/dashboard/api/percentiles")).json()["samples"]["run"] == 1
    anonymous = httpx.AsyncClient(transport=a._transport, base_url="http://localhost")
    assert (await anonymous.get("/dashboard/api/overview")).status_code == 401
    wrong = httpx.AsyncClient(
        transport=a._transport, base_url="http://localhost", headers={"Authorization": "apikey x"}
    )
    assert (await wrong.get("/dashboard/api/jobs")).status_code == 401


async def _session(app_state: dict[str, object], session_id: str, instance: str, mode: str, created: float) -> None:
    from qiskit_runtime_server.shared.sessions import SessionRecord, SessionStore

    sessions = app_state["sessions"]
    assert isinstance(sessions, SessionStore)
    await sessions.create(
        SessionRecord(
            id=session_id,
            instance=instance,
            backend="fake_manila",
            mode=mode,
            max_ttl=3600,
            interactive_ttl=60,
            created=created,
        )
    )


async def test_sessions_view_lists_visible_sessions_newest_first(guarded: dict[str, httpx.AsyncClient]) -> None:
    state = guarded["a"].app_state  # type: ignore[attr-defined]
    store = state["store"]
    now = time.time()
    await _session(state, "s-a-old", A, "batch", now - 30)
    await _session(state, "s-a-new", A, "dedicated", now - 10)
    await _session(state, "s-b", B, "batch", now - 20)
    for job_id, end in (("sj1", "Completed"), ("sj2", "Failed"), ("sj3", "")):
        await store.create(
            JobRecord(
                id=job_id,
                program_id="sampler",
                backend="fake_manila",
                instance=A,
                session_id="s-a-old",
                created=now - 5,
            ),
            b"{}",
        )
        if end:
            await store.start(job_id, "w1", 1)
            await store.finish(job_id, JobStatus(end), b"{}")
    await state["sessions"].close(await state["sessions"].get("s-a-new"))
    a = (await guarded["a"].get("/dashboard/api/sessions")).json()
    assert [s["id"] for s in a["sessions"]] == ["s-a-new", "s-a-old"] and a["count"] == 2
    old = a["sessions"][1]
    assert old["mode"] == "batch" and old["backend"] == "fake_manila" and old["instance"] == A
    assert old["state"] == "active" and old["closed"] is None and old["created"]
    assert old["jobs"] == {"Queued": 1, "Running": 0, "Completed": 1, "Failed": 1, "Cancelled": 0}
    assert a["sessions"][0]["state"] == "closed" and a["sessions"][0]["closed"]
    b = (await guarded["b"].get("/dashboard/api/sessions")).json()
    assert [s["id"] for s in b["sessions"]] == ["s-b"]
    ops = (await guarded["ops"].get("/dashboard/api/sessions?limit=2")).json()
    assert [s["id"] for s in ops["sessions"]] == ["s-a-new", "s-b"] and ops["count"] == 3
    page = (await guarded["ops"].get("/dashboard/api/sessions?limit=2&offset=2")).json()
    assert [s["id"] for s in page["sessions"]] == ["s-a-old"]
    only_b = (await guarded["ops"].get(f"/dashboard/api/sessions?instance={B}")).json()
    assert [s["id"] for s in only_b["sessions"]] == ["s-b"]
    assert (await guarded["a"].get(f"/dashboard/api/sessions?instance={B}")).status_code == 403


async def test_session_index_is_trimmed_after_the_retention(client: httpx.AsyncClient) -> None:
    from qiskit_runtime_server.shared import job_index, keys
    from qiskit_runtime_server.shared.sessions import sessions_index

    state = client.app_state  # type: ignore[attr-defined]
    now = time.time()
    await _session(state, "s-old", A, "batch", now - 10_000)
    await _session(state, "s-new", A, "batch", now - 10)
    await job_index.trim(state["pool"], 1000, now + job_index.TRIM_INTERVAL + 1)
    members = await state["pool"].zrange(sessions_index(keys.dash_scope(A)), 0, -1)
    assert [m.decode() for m in members] == ["s-new"]
    assert [s["id"] for s in (await client.get("/dashboard/api/sessions")).json()["sessions"]] == ["s-new"]


async def test_sessions_of_a_key_with_two_instances_are_merged() -> None:
    c = "crn:v1:bluemix:public:quantum-computing:us-east:a/c:inst-c::"
    async with in_process_api({"QRS_API_KEYS": f"key-ab={A},{B};key-c={c}"}, api_key=None) as http:
        now = time.time()
        await _session(http.app_state, "s-a", A, "batch", now - 30)  # type: ignore[attr-defined]
        await _session(http.app_state, "s-c", c, "batch", now - 20)  # type: ignore[attr-defined]
        await _session(http.app_state, "s-b", B, "dedicated", now - 10)  # type: ignore[attr-defined]
        reply = (await http.get("/dashboard/api/sessions", headers={"Authorization": "apikey key-ab"})).json()
        assert [s["id"] for s in reply["sessions"]] == ["s-b", "s-a"] and reply["count"] == 2
