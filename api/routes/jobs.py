"""``/jobs``: submit, poll and fetch results (docs/protocol.md §5)."""

from __future__ import annotations

import asyncio
import math
import secrets
import time

import msgspec
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from qiskit_runtime_server.api.admission import admit
from qiskit_runtime_server.api.auth import authenticate
from qiskit_runtime_server.api.body import decode_json, read_limited
from qiskit_runtime_server.api.qasm_check import check_qasm_text
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared.errors import InvalidRequest, JobNotFound, ProgramNotFound
from qiskit_runtime_server.shared.executor_schemas import EXECUTOR_SCHEMA_VERSIONS
from qiskit_runtime_server.shared.job_limits import check_params
from qiskit_runtime_server.shared.models import JobRecord, JobStatus, JobSubmission, job_view

PROGRAMS = frozenset({"sampler", "estimator", "executor", "noise-learner"})
MAX_TAG_LENGTH = 255
MAX_TAGS = 100

_decode_submission = msgspec.json.Decoder(JobSubmission).decode


class _PrimitiveParams(msgspec.Struct):
    """Enough of sampler/estimator ``params`` to reject a malformed body before queuing it."""

    pubs: list[msgspec.Raw]
    options: dict[str, object] | None = None


_decode_primitive_params = msgspec.json.Decoder(_PrimitiveParams).decode
_decode_pub_items = msgspec.json.Decoder(list[msgspec.Raw]).decode


class _ExecutorParams(msgspec.Struct):
    """The outline of executor ``params`` (docs/protocol.md §5.3); the worker validates the rest.

    The full pydantic models (``ibm_quantum_schemas``) import qiskit, which the API never loads.
    """

    schema_version: str
    quantum_program: dict[str, object]
    options: dict[str, object] | None = None


_decode_executor_params = msgspec.json.Decoder(_ExecutorParams).decode


def _validate_executor_params(raw: msgspec.Raw) -> None:
    params = decode_json(_decode_executor_params, raw, "params for program executor")
    if params.schema_version not in EXECUTOR_SCHEMA_VERSIONS:
        raise InvalidRequest(
            f"Unsupported executor schema_version {params.schema_version!r}; "
            f"supported: {', '.join(EXECUTOR_SCHEMA_VERSIONS)}."
        )
    if not isinstance(params.quantum_program.get("items"), list):
        raise InvalidRequest("params.quantum_program.items must be a list of program items.")


# ``ibm_quantum_schemas.noise_learner_v3`` versions the client 0.51 has converters for.
NOISE_LEARNER_V3_SCHEMA_VERSIONS = ("v0.1", "v0.2", "v0.3")


class _NoiseLearnerParams(msgspec.Struct):
    """The outline of ``noise-learner`` params: ``NoiseLearner`` sends ``circuits``,
    ``NoiseLearnerV3`` a ``schema_version`` with ``instructions``; the worker validates the rest."""

    circuits: list[msgspec.Raw] | None = None
    schema_version: str | None = None
    instructions: dict[str, object] | None = None
    options: dict[str, object] | None = None


_decode_noise_learner_params = msgspec.json.Decoder(_NoiseLearnerParams).decode


def _validate_noise_learner_params(raw: msgspec.Raw) -> None:
    try:
        params = _decode_noise_learner_params(raw)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid params for program noise-learner: {exc}") from None
    if params.schema_version is None:
        if not params.circuits:
            raise InvalidRequest("params.circuits must contain at least one circuit.")
        return
    if params.schema_version not in NOISE_LEARNER_V3_SCHEMA_VERSIONS:
        raise InvalidRequest(
            f"Unsupported noise-learner schema_version {params.schema_version!r}; "
            f"supported: {', '.join(NOISE_LEARNER_V3_SCHEMA_VERSIONS)}."
        )
    if params.instructions is None:
        raise InvalidRequest("params.instructions is required with a schema_version.")


# A precision's square must stay a finite float (the worker runs ceil(1 / precision**2) shots).
MAX_PRECISION = 1e150
# Numbers longer than this are shown cut in messages (an integer may have thousands of digits).
_SHOWN = 40


def _shown(value: object) -> str:
    """``repr(value)`` for a message, cut at :data:`_SHOWN` characters (never ``str`` of a huge int)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**_SHOWN:
        return f"an integer of more than {_SHOWN} digits"
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _integer_text(raw: msgspec.Raw) -> str:
    """An integer's JSON text, cut for a message: ``"1000000000…(4301 digits)"``."""
    text = bytes(raw).decode("ascii", "replace").strip()
    return text if len(text) <= _SHOWN else f"{text[:20]}…({len(text.lstrip('-'))} digits)"


def _check_shots(value: object, where: str, max_shots: int) -> None:
    if value is None or isinstance(value, dict):
        return  # absent, or a RuntimeEncoder-typed value: the worker decodes and checks it
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"{where}: shots must be a positive integer, got {_shown(value)}.")
    if value > max_shots:
        raise InvalidRequest(f"{where}: {_shown(value)} shots requested, at most {max_shots} are allowed.")


def min_precision(max_shots: int) -> float:
    """The smallest precision whose ``ceil(1 / precision**2)`` shots stay within ``max_shots``."""
    return 1 / math.sqrt(max_shots)


def _check_precision(value: object, where: str, max_shots: int) -> None:
    """A precision in ``[1/sqrt(max_shots), MAX_PRECISION)``: the estimator runs ``ceil(1 / precision**2)``
    shots per basis (shared/job_limits.py's ``QRS_MAX_SHOTS`` bounds them), so a precision of
    ``1e-300`` (whose square is 0.0) or ``1e200`` (whose square overflows) never reaches a worker."""
    if value is None or isinstance(value, dict):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidRequest(f"{where}: precision must be a positive number, got {_shown(value)}.")
    if not value < MAX_PRECISION:  # also infinity; an int compares without conversion
        raise InvalidRequest(f"{where}: precision must be below {MAX_PRECISION:g}, got {_shown(value)}.")
    square = float(value) ** 2
    if square == 0 or 1.0 / square > max_shots:
        raise InvalidRequest(
            f"{where}: precision {_shown(value)} needs more than {max_shots} shots (ceil(1 / precision**2)); "
            f"the smallest precision allowed is {min_precision(max_shots):.6g}."
        )


def _pub_value(raw: msgspec.Raw, where: str, kind: str, max_shots: int) -> object:
    """The decoded JSON of one PUB element; an integer too long for Python (4301+ digits) is refused."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        text = _integer_text(raw)
        if kind == "shots":
            raise InvalidRequest(f"{where}: {text} shots requested, at most {max_shots} are allowed.") from None
        raise InvalidRequest(f"{where}: precision must be below {MAX_PRECISION:g}, got {text}.") from None


def _check_qasm(raw: msgspec.Raw, where: str) -> None:
    """The light submission check of a PUB circuit given as an OpenQASM 3 string (api/qasm_check.py)."""
    text = msgspec.json.decode(raw)
    if isinstance(text, str):
        check_qasm_text(text, where)


# PUB lengths qiskit's SamplerPub/EstimatorPub.coerce accept (and their message).
_PUB_LENGTHS = {"sampler": (1, 3, "1, 2 or 3"), "estimator": (2, 4, "2, 3 or 4")}


def validate_pub_numbers(program_id: str, params: _PrimitiveParams, max_shots: int) -> None:
    """Refuse malformed PUB lists, and shots and precisions IBM refuses, read from the plain JSON
    of sampler/estimator params.

    Sampler PUBs are ``[circuit, parameter_values, shots]``, estimator PUBs ``[circuit,
    observables, parameter_values, precision]`` (docs/protocol.md §5.2): a list PUB of another length
    (``[]`` included) is refused with qiskit's message. ``options.default_shots`` and
    ``options.default_precision`` are checked like the PUBs' own. Shots must be integers in
    ``1..max_shots`` (``QRS_MAX_SHOTS``); precisions numbers > 0 whose ``ceil(1 / precision**2)``
    shots stay within ``max_shots`` (at least ``1/sqrt(max_shots)``) and below
    :data:`MAX_PRECISION`. Only the PUB element holding the number is decoded, never QPY
    circuits, so this costs nothing for large PUBs and needs no qiskit; a circuit given as an
    OpenQASM 3 string gets the light check of api/qasm_check.py.

    Raises:
        InvalidRequest: the first bad value, naming its PUB (400, IBM's error format).
    """
    options = params.options or {}
    _check_shots(options.get("default_shots"), "options.default_shots", max_shots)
    if program_id == "estimator":
        _check_precision(options.get("default_precision"), "options.default_precision", max_shots)
    position = 2 if program_id == "sampler" else 3
    shortest, longest, lengths = _PUB_LENGTHS[program_id]
    for index, raw in enumerate(params.pubs):
        where = f"PUB {index}"
        if bytes(raw).lstrip().startswith(b'"'):
            _check_qasm(raw, where)  # a circuit alone, as OpenQASM 3
            continue
        if not bytes(raw).lstrip().startswith(b"["):
            continue  # not a PUB list: the worker refuses it with the details
        items = _decode_pub_items(raw)
        if items and bytes(items[0]).lstrip().startswith(b'"'):
            _check_qasm(items[0], where)
        if not shortest <= len(items) <= longest:
            raise InvalidRequest(f"{where}: the length of pub must be {lengths}, but length {len(items)} is given.")
        if len(items) <= position:
            continue
        if program_id == "sampler":
            _check_shots(_pub_value(items[position], where, "shots", max_shots), where, max_shots)
        else:
            _check_precision(_pub_value(items[position], where, "precision", max_shots), where, max_shots)


def new_job_id() -> str:
    """A 20-character lowercase id, the shape of IBM's job ids."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "d" + "".join(secrets.choice(alphabet) for _ in range(19))


def _bool_param(value: str | None) -> bool:
    return (value or "").lower() == "true"


def _validate(submission: JobSubmission, request: Request) -> None:
    settings = app_state(request)["settings"]
    if submission.program_id not in PROGRAMS:
        raise ProgramNotFound(submission.program_id)
    if not submission.backend:
        raise InvalidRequest("A backend is required: set the 'backend' field.")
    # The backend may be any served name (fake_*, IBM name, alias, mock_*); a calibration_id
    # must be the device's, else 404 as for an unknown backend.
    app_state(request)["catalog"].get(submission.backend).check_calibration(submission.calibration_id)
    if not bytes(submission.params).strip(b" \t\r\n").startswith(b"{"):
        raise InvalidRequest("The 'params' field is required and must be a JSON object.")
    if submission.program_id == "executor":
        _validate_executor_params(submission.params)
    elif submission.program_id == "noise-learner":
        _validate_noise_learner_params(submission.params)
    else:
        params = decode_json(_decode_primitive_params, submission.params, f"params for program {submission.program_id}")
        if not params.pubs:
            raise InvalidRequest("params.pubs must contain at least one PUB.")
        validate_pub_numbers(submission.program_id, params, settings.max_shots)
    if len(submission.tags or []) > MAX_TAGS:
        raise InvalidRequest(f"A job can have at most {MAX_TAGS} tags.")
    for tag in submission.tags or []:
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise InvalidRequest(f"Tags must be 1 to {MAX_TAG_LENGTH} characters long.")
    if submission.cost is not None and not 0 < submission.cost <= settings.max_execution_time:
        raise InvalidRequest(f"cost (max_execution_time) must be between 1 and {settings.max_execution_time} seconds.")


async def create_job(request: Request) -> Response:
    """``POST /jobs``: validate, then store the job with its params verbatim and queue it atomically.

    Answers ``{"id", "backend"}`` at once. 404 for an unknown program or backend, 400 for a
    malformed body, 413 for an oversize one.
    """
    principal = authenticate(request)
    settings = app_state(request)["settings"]
    body = await read_limited(request, settings.max_params_bytes)
    submission = decode_json(_decode_submission, body, "job submission")
    _validate(submission, request)
    # In a thread: inflating a job's blobs to count them takes up to ~1 s (QRS_MAX_DECODED_BYTES),
    # and zlib releases the GIL, so the event loop keeps serving meanwhile.
    await asyncio.to_thread(check_params, bytes(submission.params), submission.program_id, settings.job_limits)
    guard = await admit(request, principal, submission)
    assert submission.backend is not None
    served = app_state(request)["catalog"].get(submission.backend)
    timing = app_state(request)["timing"]
    # IBM-like timing (docs/timing.md): decided here, once, and kept in the record for the worker.
    timed = timing.backend_timed(app_state(request)["catalog"], submission.backend)
    queue_seconds = round(timing.draw_queue_seconds(), 3) if timed else None
    record = JobRecord(
        id=new_job_id(),
        program_id=submission.program_id,
        backend=submission.backend,
        instance=principal.instance,
        created=time.time(),
        tags=sorted(set(submission.tags or [])),
        session_id=submission.session_id,
        log_level=submission.log_level,
        cost=submission.cost,
        private=bool(submission.private),
        runtime=submission.runtime or "",
        # The calibration the job runs with: the requested one, which can only be the device's.
        calibration_id=served.calibration_id,
        user=principal.user,
        qpu_overhead=timing.overhead if timed else None,
        queue_seconds=queue_seconds,
    )
    store = app_state(request)["store"]
    # Record, indexes and arq queue entry in one transaction: a failure here leaves nothing
    # that could run after the client re-POSTs (it retries 5xx answers as new jobs).
    # The transaction also rings the workers' doorbell (shared/queue.py:queue_commands).
    await store.create(
        record,
        bytes(submission.params),
        queue_name=settings.queue_name,
        guard=guard,
        defer_seconds=queue_seconds or 0.0,
    )
    answer: dict[str, object] = {"id": record.id, "backend": record.backend}
    if record.session_id:
        answer["session_id"] = record.session_id
    if record.private:
        answer["private"] = True
    # Retention housekeeping (at most once a minute) after the answer is sent, not before.
    return MsgspecResponse(answer, background=BackgroundTask(app_state(request)["sessions"].housekeeping))


async def load_job(request: Request) -> JobRecord:
    """The job of the path's ``job_id``, visible only to the instance that created it.

    Raises:
        JobNotFound: no such job, or it belongs to another instance (404).
    """
    principal = authenticate(request)
    job_id = request.path_params["job_id"]
    record = await app_state(request)["store"].get(job_id)
    if record is None or record.instance != principal.instance:
        raise JobNotFound(job_id)
    return record


async def get_job(request: Request) -> Response:
    """``GET /jobs/{id}``: the job with ``state.status``; ``params`` unless ``exclude_params=true``.

    A request for an unfinished job waits for it to finish until the job is ``QRS_STATUS_HOLD``
    seconds old, so the client's first poll (sent right after submission) sees the final state
    of a job that takes less; requests for older jobs are answered at once, as IBM does.
    """
    record = await load_job(request)
    hold = app_state(request)["settings"].status_hold - max(0.0, time.time() - record.created)
    if not record.status.final and hold > 0:
        store = app_state(request)["store"]
        latest = record

        async def finished() -> bool:
            nonlocal latest
            latest = await store.get(record.id) or latest
            return latest.status.final

        await app_state(request)["finished"].wait(record.id, hold, finished)
        record = latest if latest.status.final else (await store.get(record.id) or latest)
    params = None
    # Private jobs never return their params (IBM omits them; the client's job.inputs is {}).
    if not record.private and not _bool_param(request.query_params.get("exclude_params")):
        raw = await app_state(request)["store"].params(record.id)
        params = msgspec.Raw(raw) if raw is not None else None
    return MsgspecResponse(job_view(record, app_state(request)["settings"].max_execution_time, params))


async def job_results(request: Request) -> Response:
    """``GET /jobs/{id}/results``: the RuntimeEncoder text of the result, as ``text/plain``.

    Failed and cancelled jobs answer 200 with their error text: the client reads it to build
    its error message (docs/protocol.md P9). The result of a completed ``private`` job is handed out
    once and deleted in the same step; a later read answers, as IBM does, 200 with an empty body,
    which ``job.result()`` returns as ``None`` (the client decodes only a non-empty body).
    """
    record = await load_job(request)
    if not record.status.final:
        raise JobNotFound(f"{record.id} results")
    store = app_state(request)["store"]
    private = record.private and record.status == JobStatus.COMPLETED
    result = await (store.take_result(record.id) if private else store.result(record.id))
    if result is None and private:
        return Response(b"", media_type="application/json")
    if result is None:
        text = record.reason or ""
        return PlainTextResponse(text)
    # text/plain as in IBM's API document, also for a completed job's JSON text: the client
    # reads ``response.text``, QRMI's generated client accepts a string only as text/plain.
    return Response(result, media_type="text/plain; charset=utf-8")


async def job_logs(request: Request) -> Response:
    """``GET /jobs/{id}/logs``: the worker's log lines for this job, as text."""
    record = await load_job(request)
    lines = await app_state(request)["store"].logs(record.id)
    return PlainTextResponse("".join(line + "\n" for line in lines))


routes = [
    Route("/jobs", create_job, methods=["POST"]),
    Route("/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/jobs/{job_id}/results", job_results, methods=["GET"]),
    Route("/jobs/{job_id}/logs", job_logs, methods=["GET"]),
]
