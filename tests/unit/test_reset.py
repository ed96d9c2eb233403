"""Clean state and snapshots: ``POST /admin/reset`` empties jobs, sessions,
usage and counters but keeps what running processes need, and is refused unless
``QRS_ALLOW_RESET`` allows it (loopback rule in open mode, an admin key with access control
on); ``GET /admin/export`` and ``POST /admin/import`` round-trip the store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from arq.constants import job_key_prefix

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.shared import keys, snapshot, stats
from qiskit_runtime_server.shared.models import JobStatus
from qiskit_runtime_server.shared.settings import DEFAULT_INSTANCE, load_settings
from qiskit_runtime_server.worker import recovery
from tests.unit.conftest import in_process_api

JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [1]}}
OPEN = {"QRS_ALLOW_RESET": "true"}


def _forbidden(response: object, words: str) -> None:
    body = response.json()  # type: ignore[attr-defined]
    assert response.status_code == 403, body  # type: ignore[attr-defined]
    assert body["errors"][0]["code"] == "forbidden" and words in body["errors"][0]["message"]
    assert body["trace"]


async def test_reset_is_refused_unless_turned_on() -> None:
    async with in_process_api() as http:
        _forbidden(await http.post("/admin/reset"), "QRS_ALLOW_RESET=true")
        _forbidden(await http.post("/admin/import", content=b""), "QRS_ALLOW_RESET=true")


def test_an_unknown_allow_reset_value_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="QRS_ALLOW_RESET"):
        create_app(load_settings({"QRS_ALLOW_RESET": "yes"}))


@pytest.mark.parametrize(
    ("environ", "allowed"),
    [
        ({"QRS_HOST": "127.0.0.1", "QRS_ALLOW_RESET": "true"}, True),
        ({"QRS_HOST": "::1", "QRS_ALLOW_RESET": "true"}, True),
        ({"QRS_HOST": "localhost", "QRS_ALLOW_RESET": "TRUE"}, True),
        ({"QRS_HOST": "0.0.0.0", "QRS_ALLOW_RESET": "true"}, False),
        ({"QRS_HOST": "10.1.2.3", "QRS_ALLOW_RESET": "true"}, False),
        ({"QRS_HOST": "0.0.0.0", "QRS_ALLOW_RESET": "force"}, True),
    ],
)
async def test_open_mode_resets_only_on_a_loopback_bind_unless_forced(environ: dict[str, str], allowed: bool) -> None:
    async with in_process_api(environ) as http:
        response = await http.post("/admin/reset")
        if allowed:
            assert response.status_code == 200, response.text
        else:
            _forbidden(response, "QRS_ALLOW_RESET=force")


async def test_with_access_control_reset_and_export_need_an_admin_key() -> None:
    environ = {"QRS_API_KEYS": "user=crn1", "QRS_ADMIN_KEYS": "admin", "QRS_ALLOW_RESET": "true", "QRS_HOST": "0.0.0.0"}
    async with in_process_api(environ, api_key=None) as http:
        for method, path in (("POST", "/admin/reset"), ("GET", "/admin/export"), ("POST", "/admin/import")):
            assert (await http.request(method, path)).status_code == 401
            denied = await http.request(method, path, headers={"Authorization": "apikey user"})
            _forbidden(denied, "QRS_ADMIN_KEYS")
        assert (await http.post("/admin/reset", headers={"Authorization": "apikey admin"})).status_code == 200
        assert (await http.get("/admin/export", headers={"Authorization": "apikey admin"})).status_code == 200


async def test_open_metrics_does_not_open_export() -> None:
    environ = {"QRS_API_KEYS": "user=crn1", "QRS_ADMIN_KEYS": "admin", "QRS_OPEN_METRICS": "true"}
    async with in_process_api(environ, api_key=None) as http:
        assert (await http.get("/admin/export")).status_code == 401


async def test_reset_empties_jobs_sessions_usage_and_counters_and_keeps_the_runtime_keys() -> None:
    async with in_process_api(OPEN) as http:
        redis = http.app_state["pool"]  # type: ignore[attr-defined]
        session = (await http.post("/api/v1/sessions", json={"mode": "batch", "backend": "fake_manila"})).json()
        queued = (await http.post("/api/v1/jobs", json={**JOB, "session_id": session["id"]})).json()["id"]
        done = (await http.post("/api/v1/jobs", json=JOB)).json()["id"]
        await http.app_state["store"].finish(done, JobStatus.COMPLETED, b"{}", quantum_seconds=2.0)  # type: ignore[attr-defined]
        await redis.set(keys.worker("w1"), b"{}")
        await redis.zadd(keys.WORKERS, {"w1": time.time()})
        await redis.set(recovery.SWEEP_LOCK, b"w1")
        secret = await redis.get(keys.JWT_SECRET)
        assert await redis.zcard(load_settings().queue_name) == 2
        assert await redis.exists(job_key_prefix + queued)

        response = await http.post("/admin/reset")
        assert response.status_code == 200 and response.json()["jobs"] == 2

        left = sorted(k.decode() for k in await redis.keys("*"))
        assert left == sorted([keys.JWT_SECRET, keys.WORKERS, keys.worker("w1"), recovery.SWEEP_LOCK])
        assert await redis.get(keys.JWT_SECRET) == secret
        # The same token still works, and the API sees an empty store.
        assert (await http.get("/api/v1/jobs")).json()["jobs"] == []
        assert (await http.get(f"/api/v1/sessions/{session['id']}")).status_code == 404
        assert (await http.get("/api/v1/instances/usage")).json()["usage_consumed_seconds"] == 0
        await redis.delete(keys.worker("w1"), keys.WORKERS)  # not a real worker's entry
        overview = (await http.get("/dashboard/api/overview")).json()
        assert not any(overview["jobs"].values()), overview


def test_reset_keeps_the_sweep_lock_of_the_workers() -> None:
    assert snapshot.SWEEP_LOCK == recovery.SWEEP_LOCK


async def test_export_reset_import_round_trip() -> None:
    async with in_process_api(OPEN) as http:
        state = http.app_state  # type: ignore[attr-defined]
        session = (await http.post("/api/v1/sessions", json={"mode": "batch", "backend": "fake_manila"})).json()
        done = (await http.post("/api/v1/jobs", json={**JOB, "session_id": session["id"], "tags": ["t"]})).json()["id"]
        queued = (await http.post("/api/v1/jobs", json=JOB)).json()["id"]
        await state["store"].log(done, "a log line")
        await state["store"].finish(done, JobStatus.COMPLETED, b'{"ok": "\xc3\xa9"}', quantum_seconds=1.5)
        await state["pool"].set(keys.job_result(queued), b"\xff\xfe")  # not UTF-8: carried as base64
        before = {job_id: (await http.get(f"/api/v1/jobs/{job_id}")).json() for job_id in (done, queued)}
        usage = (await http.get("/api/v1/instances/usage")).json()["usage_consumed_seconds"]

        export = await http.get("/admin/export")
        assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
        lines = export.content.splitlines()
        assert len(lines) == 1 + 2 + 1 + 1  # header, two jobs, a session, a usage counter

        await http.post("/admin/reset")
        assert (await http.get(f"/api/v1/jobs/{done}")).status_code == 404
        imported = await http.post("/admin/import", content=export.content)
        assert imported.json() == {"jobs": 2, "sessions": 1, "usage": 1, "skipped": []}, imported.text

        assert (await http.get(f"/api/v1/jobs/{done}")).json() == before[done]
        assert (await http.get(f"/api/v1/jobs/{queued}")).json()["state"]["status"] == "Queued"
        assert (await http.get(f"/api/v1/jobs/{done}/results")).content == b'{"ok": "\xc3\xa9"}'
        assert await state["pool"].get(keys.job_result(queued)) == b"\xff\xfe"
        assert (await http.get(f"/api/v1/jobs/{done}/logs")).text.strip().endswith("a log line")
        listed = (await http.get("/api/v1/jobs", params={"tags": "t"})).json()["jobs"]
        assert [j["id"] for j in listed] == [done]
        assert (await http.get(f"/api/v1/sessions/{session['id']}")).status_code == 200
        assert (await http.get("/api/v1/instances/usage")).json()["usage_consumed_seconds"] == usage
        # The queued job is queued again, and the dashboard counts both jobs.
        assert await state["pool"].zscore(state["settings"].queue_name, queued) is not None
        now = await stats.read_now(state["pool"], [keys.dash_scope(DEFAULT_INSTANCE)])
        assert now["state|Completed"] == 1 and now["state|Queued"] == 1, now

        again = await http.post("/admin/import", content=export.content)
        assert sorted(again.json()["skipped"]) == sorted([done, queued, session["id"]])


async def test_a_malformed_import_line_is_a_400_naming_it() -> None:
    async with in_process_api(OPEN) as http:
        bad = b'{"kind": "header", "format": "qiskit-runtime-server/export", "version": 1}\n{"kind": "nope"}\n'
        response = await http.post("/admin/import", content=bad)
        assert response.status_code == 400
        assert "line 2" in response.json()["errors"][0]["message"]
        foreign = await http.post("/admin/import", content=b'{"kind": "header", "format": "other", "version": 1}')
        assert "not an export" in foreign.json()["errors"][0]["message"]


@pytest.mark.redis
def test_cli_export_and_import_on_redis_url(real_redis_url: str, tmp_path: Path) -> None:
    import asyncio

    from qiskit_runtime_server.shared.queue import connect
    from qiskit_runtime_server.shared.store import JobStore
    from tests.unit.test_retention import job

    # The test database is shared with other tests' deployments: start from an empty one, so the
    # export holds exactly the job seeded here.
    redis.Redis.from_url(real_redis_url).flushdb()

    async def seed() -> None:
        pool = await connect(real_redis_url)
        store = JobStore(pool)
        await store.create(job("cli-job"), b'{"pubs": []}')
        await store.finish("cli-job", JobStatus.COMPLETED, b"{}")
        await pool.aclose()

    asyncio.run(seed())
    env = {**os.environ, "REDIS_URL": real_redis_url}
    dump = tmp_path / "store.jsonl"
    command = [sys.executable, "-m", "qiskit_runtime_server"]
    subprocess.run([*command, "export", str(dump)], env=env, check=True, timeout=60)
    assert b'"id":"cli-job"' in dump.read_bytes()
    redis.Redis.from_url(real_redis_url).flushdb()
    loaded = subprocess.run([*command, "import", str(dump)], env=env, check=True, timeout=60, capture_output=True)
    assert b"imported 1 jobs" in loaded.stderr
    assert redis.Redis.from_url(real_redis_url).get(keys.job_result("cli-job")) == b"{}"
    missing = subprocess.run(
        [*command, "export", "-"],
        env={k: v for k, v in env.items() if k != "REDIS_URL"},
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode != 0 and b"set REDIS_URL" in missing.stderr
