"""Schema-driven fuzzing: schemathesis generates requests from ``/openapi.json`` (valid and
invalid bodies, parameters and headers) against a real uvicorn running the API, and no answer
may be a 5xx: the client retries those, POST included, so a client mistake must be a 4xx.

Deterministic (``derandomize``, no example database) and bounded: ``FUZZ_EXAMPLES`` examples
per operation (default 40), about a minute on two cores.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from qiskit_runtime_server.api.app import create_app
from qiskit_runtime_server.api.openapi import openapi_document
from qiskit_runtime_server.api.server import server_config
from qiskit_runtime_server.shared.settings import load_settings
from tests.conftest import free_port

pytestmark = pytest.mark.fuzz

ENVIRON = {"QRS_STATUS_HOLD": "0", "QRS_BODY_TIMEOUT": "5", "QRS_MAX_PARAMS_BYTES": "1000000"}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))



@schemathesis.serializer("application/x-ndjson")
def _json_lines(ctx: object, value: object) -> bytes:
    """``POST /admin/import``'s body (JSON lines): the generated text as it is."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else repr(value).encode()


schema = schemathesis.openapi.from_dict(openapi_document(create_app(load_settings(ENVIRON)).routes, "fuzz"))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The API (cli.py's uvicorn configuration, fakeredis) on a free port, in a thread."""
    settings_ = load_settings(ENVIRON, host="127.0.0.1", port=free_port())
    server = uvicorn.Server(server_config(create_app(settings_), settings_))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{settings_.port}"
    server.should_exit = True
    thread.join(10)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: schemathesis.Case, base_url: str) -> None:
    # Most requests carry valid credentials so that they reach the handlers; the generated
    # Authorization headers (security schemes) are kept when schemathesis made one.
    headers = None if "Authorization" in (case.headers or {}) else {"Authorization": "apikey fuzz"}
    if case.operation.path == "/ready":
        # Its documented 503 means "no live worker" (none runs here), not a server error.
        status = case.call(base_url=base_url, headers=headers, timeout=30).status_code
        assert status < 500 or status == 503, status
        return
    case.call_and_validate(base_url=base_url, headers=headers, checks=[not_a_server_error], timeout=30)


# Byte-level mutations of valid bodies: schemathesis sends well-formed JSON, so invalid UTF-8,
# lone surrogates, nesting deep enough for a RecursionError, huge numbers and truncation come
# from here.
SEEDS = {
    ("POST", "/api/v1/jobs"): b'{"program_id": "sampler", "backend": "fake_manila", "tags": ["a"], '
    b'"params": {"pubs": [["x", null, 10]], "options": {"default_shots": 10}, "version": 2}, "cost": 5}',
    ("POST", "/api/v1/jobs "): b'{"program_id": "executor", "backend": "fake_manila", "params": '
    b'{"schema_version": "v1.0", "quantum_program": {"items": [], "shots": 1}, "options": {}}}',
    ("POST", "/api/v1/sessions"): b'{"mode": "batch", "backend": "fake_manila", "max_ttl": 100}',
    ("PUT", "/api/v1/jobs/{job}/tags"): b'{"tags": ["a", "b"]}',
    ("PATCH", "/api/v1/sessions/{session}"): b'{"accepting_jobs": false}',
    ("POST", "/identity/token"): b"apikey=k&grant_type=urn%3Aibm",
}
NASTY = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\\ud800",
    b"\\udc00",
    b"\x00",
    b'"',
    b",",
    b"}",
    b"]",
    b"1e999999",
    b"-0",
    b"9" * 400,
    b"[" * 3000 + b"]" * 3000,
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b"null",
    b"true",
    b'""',
    b"[]",
    b"{}",
    b"%ff",
    b"&",
    b"=",
]


@st.composite
def mutated_bodies(draw: st.DrawFn) -> tuple[tuple[str, str], bytes]:
    """A route of :data:`SEEDS` and its seed with 1-4 insertions, replacements or deletions,
    placed mostly where a JSON value starts (after ``:``, ``[`` or ``,``) so that they parse deep."""
    route = draw(st.sampled_from(sorted(SEEDS)))
    body = SEEDS[route]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        starts = [i + 1 for i, byte in enumerate(body) if byte in b":[,="] or [0]
        # Four times in five at a value's start, and a listed nasty value rather than random bytes.
        anywhere = draw(st.integers(min_value=0, max_value=4)) == 0
        position = draw(st.integers(min_value=0, max_value=len(body)) if anywhere else st.sampled_from(starts))
        data = draw(st.binary(max_size=8) if draw(st.integers(0, 4)) == 0 else st.sampled_from(NASTY))
        kind = draw(st.sampled_from(["insert", "replace", "delete"]))
        length = draw(st.integers(min_value=0, max_value=20))
        if kind == "insert":
            body = body[:position] + data + body[position:]
        elif kind == "replace":
            body = body[:position] + data + body[position + length :]
        else:
            body = body[:position] + body[position + length :]
    return route, body


@pytest.fixture(scope="module")
def targets(base_url: str) -> dict[str, str]:
    """Ids of a job and a session for the body routes that name one."""
    import httpx

    auth = {"Authorization": "apikey fuzz"}
    job = httpx.post(f"{base_url}/api/v1/jobs", content=SEEDS[("POST", "/api/v1/jobs")], headers=auth)
    session = httpx.post(f"{base_url}/api/v1/sessions", content=SEEDS[("POST", "/api/v1/sessions")], headers=auth)
    return {"job": job.json()["id"], "session": session.json()["id"]}


@settings(
    max_examples=EXAMPLES * 5, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(mutated=mutated_bodies())
def test_mutated_bodies_get_no_server_errors(
    base_url: str, targets: dict[str, str], mutated: tuple[tuple[str, str], bytes]
) -> None:
    import httpx

    (method, path), body = mutated
    url = base_url + path.strip().format(**targets)
    response = httpx.request(method, url, content=body, headers={"Authorization": "apikey fuzz"}, timeout=30)
    assert response.status_code < 500, (method, path, body[:300], response.text[:300])
    if response.status_code >= 400:
        assert set(response.json()["errors"][0]) == {"code", "message", "more_info"}


@pytest.mark.parametrize("route", sorted(SEEDS))
def test_every_nasty_value_at_every_value_start(base_url: str, targets: dict[str, str], route: tuple[str, str]) -> None:
    """Exhaustive and deterministic: each :data:`NASTY` value inserted where each JSON value of
    the seed starts (and after its last byte), one request each."""
    import httpx

    method, path = route
    seed = SEEDS[route]
    starts = sorted({i + 1 for i, byte in enumerate(seed) if byte in b":[,="} | {0, len(seed)})
    failures = []
    with httpx.Client(base_url=base_url, headers={"Authorization": "apikey fuzz"}, timeout=30) as http:
        for position in starts:
            for data in NASTY:
                body = seed[:position] + data + seed[position:]
                response = http.request(method, path.strip().format(**targets), content=body)
                if response.status_code >= 500:
                    failures.append((body[:200], response.status_code, response.text[:200]))
    assert not failures, failures[:5]
