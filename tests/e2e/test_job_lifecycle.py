"""Listing, cancel, delete, tags, logs, metrics, time limits and usage with the unmodified client."""

from __future__ import annotations

import uuid
import warnings

import pytest

from tests.e2e.helpers import LONG_SHOTS, bell, long_circuit, occupy_every_worker

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")


def sampler(backend, tags: list[str] | None = None, **options):  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2

    if tags:
        options.setdefault("environment", {})["job_tags"] = tags
    return SamplerV2(mode=backend, options=options)


def test_listing_filters_order_and_paging(service) -> None:
    tag = f"list-{uuid.uuid4().hex[:8]}"
    backend = service.backend("fake_manila")
    isa = bell(backend)
    jobs = [sampler(backend, [tag, "odd" if i % 2 else "even"]).run([isa], shots=10) for i in range(4)]
    for job in jobs:
        job.result()
    ids = [job.job_id() for job in jobs]
    newest_first = ids[::-1]

    def listed(**kw) -> list[str]:  # type: ignore[no-untyped-def]
        return [job.job_id() for job in service.jobs(**kw)]

    assert listed(job_tags=[tag]) == newest_first
    assert listed(job_tags=[tag], descending=False) == ids
    assert listed(job_tags=[tag, "odd"]) == [ids[3], ids[1]]
    assert listed(job_tags=[tag], limit=2, skip=1) == newest_first[1:3]
    assert listed(job_tags=[tag], limit=None) == newest_first  # pages on "count"
    assert listed(job_tags=[tag], pending=False, backend_name="fake_manila", program_id="sampler") == newest_first
    assert listed(job_tags=[tag], pending=True) == []
    assert listed(job_tags=[tag], backend_name="fake_sherbrooke") == []
    assert listed(job_tags=[tag], program_id="estimator") == []
    second = jobs[1].creation_date
    assert listed(job_tags=[tag], created_after=second) == newest_first[:3]
    assert listed(job_tags=[tag], created_before=second) == newest_first[2:]


def test_tags_metrics_logs_and_delete(service) -> None:
    from qiskit_ibm_runtime.exceptions import RuntimeJobNotFound

    backend = service.backend("fake_manila")
    job = sampler(backend, ["before"]).run([bell(backend)], shots=50)
    job.result()
    new_tag = f"after-{uuid.uuid4().hex[:8]}"
    job.update_tags([new_tag, "x", "x"])
    assert sorted(job.tags) == sorted([new_tag, "x"])
    assert [j.job_id() for j in service.jobs(job_tags=[new_tag])] == [job.job_id()]
    assert service.jobs(job_tags=["before", new_tag]) == []

    metrics = job.metrics()
    assert set(metrics["timestamps"]) == {"created", "running", "finished"}
    assert metrics["timestamps"]["running"] is not None
    assert metrics["usage"]["status"] == "billed" and metrics["usage"]["quantum_seconds"] > 0
    assert metrics["num_pubs"] == 1 and metrics["qiskit_version"] and metrics["worker_id"]
    assert job.usage() == pytest.approx(metrics["usage"]["quantum_seconds"])
    logs = job.logs()
    assert "started on worker" in logs and "completed on worker" in logs and "1 PUB(s)" in logs

    service.delete_job(job.job_id())
    with pytest.raises(RuntimeJobNotFound):
        service.job(job.job_id())
    with pytest.raises(RuntimeJobNotFound):
        service.delete_job(job.job_id())


def test_cancel_queued_and_running_jobs_and_the_worker_moves_on(service, deployment) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime.exceptions import RuntimeInvalidStateError

    big = service.backend("fake_sherbrooke")
    small = service.backend("fake_manila")
    busy = occupy_every_worker(deployment.base, lambda: sampler(big).run([long_circuit(big)], shots=LONG_SHOTS))
    running = busy[0]
    queued = sampler(small).run([bell(small)], shots=10)

    queued.cancel()
    for job in busy:
        job.cancel()
    assert [service.job(job.job_id()).status() for job in busy] == ["CANCELLED"] * len(busy)
    assert service.job(queued.job_id()).status() == "CANCELLED"
    # The worker kills the simulation and takes the next job.
    after = sampler(small).run([bell(small)], shots=10)
    assert after.result(timeout=60)[0].data.meas.num_shots == 10
    assert "simulation stopped" in service.job(running.job_id()).logs()
    assert service.job(queued.job_id()).metrics()["timestamps"]["running"] is None  # never ran
    with pytest.raises(RuntimeInvalidStateError):
        service.job(running.job_id()).cancel()
    with pytest.raises(RuntimeInvalidStateError):
        after.cancel()


def test_deleting_a_running_job_stops_it(service, deployment) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime.exceptions import RuntimeJobNotFound

    big = service.backend("fake_sherbrooke")
    small = service.backend("fake_manila")
    # Every worker busy, so only the deleted job's worker can serve the next job.
    running, *others = occupy_every_worker(
        deployment.base, lambda: sampler(big).run([long_circuit(big)], shots=LONG_SHOTS)
    )
    try:
        service.delete_job(running.job_id())
        with pytest.raises(RuntimeJobNotFound):
            service.job(running.job_id())
        # The worker notices the record is gone, kills the simulation and serves the next job.
        # (A simulation left running would hold the worker for about 100 s more than this allows.)
        assert sampler(small).run([bell(small)], shots=10).result(timeout=60)[0].data.meas.num_shots == 10
    finally:
        for job in others:
            job.cancel()


def test_max_execution_time_cancels_with_1305(service) -> None:
    from qiskit_ibm_runtime.exceptions import RuntimeJobMaxTimeoutError

    big = service.backend("fake_sherbrooke")
    job = sampler(big, max_execution_time=1).run([long_circuit(big)], shots=LONG_SHOTS)
    with pytest.raises(RuntimeJobMaxTimeoutError):
        job.result()
    # The server says Cancelled with reason_code 1305; the client reports that as ERROR.
    assert job.status() == "ERROR"
    assert "maximum execution time" in job.logs()


def test_usage_reports_consumed_seconds(service) -> None:
    backend = service.backend("fake_manila")
    sampler(backend).run([bell(backend)], shots=10).result()
    usage = service.usage()
    assert usage["usage_consumed_seconds"] > 0
    assert usage["usage_limit_reached"] is False and usage["usage_limit_seconds"] is None
