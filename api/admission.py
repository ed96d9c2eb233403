"""Checks on ``POST /jobs`` beyond the body itself: the instance's usage limit and the job's session."""

from __future__ import annotations

import time

from starlette.requests import Request

from qiskit_runtime_server.api.auth import Principal
from qiskit_runtime_server.api.faults import expire_session
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared.errors import Conflict, Forbidden, InvalidRequest, SessionNotFound
from qiskit_runtime_server.shared.models import JobSubmission
from qiskit_runtime_server.shared.sessions import state_of
from qiskit_runtime_server.shared.store import Guard, usage_period


async def check_usage_limit(request: Request, instance: str) -> None:
    """Reject submissions once ``instance`` has used its monthly simulation seconds.

    Raises:
        Forbidden: the hard limit is reached (403; the client warns beforehand from
            ``usage_limit_reached`` of ``GET /instances/usage``).
    """
    limit = app_state(request)["access"].usage_limit(instance)
    if limit is None:
        return
    consumed = await app_state(request)["store"].usage_seconds(instance, usage_period(time.time()))
    if consumed >= limit:
        raise Forbidden(
            f"Instance {instance} has reached its usage limit of {limit:g} seconds for this period "
            f"({consumed:.3f} s used); new jobs are rejected until the next period."
        )


async def check_session(request: Request, principal: Principal, submission: JobSubmission) -> None:
    """A job may join a session of its own instance that is open to jobs, on the same backend.

    Raises:
        SessionNotFound: unknown session, or another instance's (404).
        Conflict: the session is closed or no longer accepts jobs (409).
        InvalidRequest: the job's backend is another device than the session's (400).
    """
    if not submission.session_id:
        return
    found = await app_state(request)["sessions"].refresh(submission.session_id)
    if found is None or found[0].instance != principal.instance:
        raise SessionNotFound(submission.session_id)
    record, act = await expire_session(request, found)
    if state_of(record, act, time.time()) == "closed":
        raise Conflict(f"Session {record.id} is closed.")
    if not record.accepting_jobs:
        raise Conflict(f"Session {record.id} is not accepting jobs.")
    # Any name of the session's device will do, its mock too (dry runs in a session).
    if submission.backend and not app_state(request)["catalog"].same_device(submission.backend, record.backend):
        raise InvalidRequest(
            f"Session {record.id} runs on backend {record.backend}; the job asks for {submission.backend}."
        )


async def admit(request: Request, principal: Principal, submission: JobSubmission) -> Guard | None:
    """All admission checks for a validated submission, in the order IBM reports them.

    Returns the condition the job's creation must still meet when it is written (the session
    is still open to jobs), for ``JobStore.create``: a session closed between these checks and
    the write refuses the job (409) instead of getting a queued job after its close.
    """
    await check_usage_limit(request, principal.instance)
    await check_session(request, principal, submission)
    if not submission.session_id:
        return None
    return app_state(request)["sessions"].job_guard(submission.session_id)
