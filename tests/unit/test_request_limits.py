"""Request bodies and client mistakes, in process: bodies are counted while streamed and refused
at their limit on every route that reads one, and malformed input gets a 4xx in IBM's format."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from tests.unit.conftest import in_process_api

CHUNK = b" " * 65_536


class Chunks:
    """A chunked (no Content-Length) request body of ``total`` 64 KiB chunks; counts what was pulled."""

    def __init__(self, head: bytes, total: int) -> None:
        self.head = head
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        for _ in range(self.total):
            self.pulled += 1
            yield CHUNK


def assert_ibm_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    error = body["errors"][0]
    assert set(error) == {"code", "message", "more_info"} and body["trace"]
    if code is not None:
        assert error["code"] == code
    return body


ROUTES = [
    # (method, path, limit setting, JSON head of the body)
    ("POST", "/api/v1/jobs", "QRS_MAX_PARAMS_BYTES", b'{"program_id": "sampler", "backend": "fake_manila", "params": '),
    ("PUT", "/api/v1/jobs/{job}/tags", "QRS_MAX_SMALL_BODY_BYTES", b'{"tags": ['),
    ("POST", "/api/v1/sessions", "QRS_MAX_SMALL_BODY_BYTES", b'{"mode": "batch", "backend": '),
    ("PATCH", "/api/v1/sessions/{session}", "QRS_MAX_SMALL_BODY_BYTES", b'{"accepting_jobs": '),
    ("POST", "/identity/token", "QRS_MAX_SMALL_BODY_BYTES", b"apikey=k&x="),
]


@pytest.mark.parametrize(("method", "path", "setting", "head"), ROUTES)
async def test_chunked_body_is_refused_at_the_limit_without_reading_the_rest(
    method: str, path: str, setting: str, head: bytes
) -> None:
    async with in_process_api({setting: "100000"}) as http:
        job = (await http.post("/api/v1/jobs", content=b'{"program_id": "sampler", "backend": "fake_manila", '
                               b'"params": {"pubs": [1]}}')).json()["id"]
        session = (await http.post("/api/v1/sessions", json={"mode": "batch", "backend": "fake_manila"})).json()["id"]
        body = Chunks(head, total=3200)  # 200 MiB if read whole
        response = await asyncio.wait_for(
            http.request(method, path.format(job=job, session=session), content=body), timeout=20
        )
        assert_ibm_error(response, 413, "payload_too_large")
        assert body.pulled <= 3, f"read {body.pulled} chunks of 64 KiB past a 100 kB limit"


async def test_small_body_limits_default_to_a_few_kilobytes(client: httpx.AsyncClient) -> None:
    big = b"apikey=k&pad=" + b"x" * 40_000
    assert_ibm_error(await client.post("/identity/token", content=big), 413)
    assert_ibm_error(await client.post("/api/v1/sessions", content=b'{"mode": "' + b"x" * 40_000 + b'"}'), 413)
    # 100 tags of 255 characters (the largest valid update) still fit.
    job = (await client.post("/api/v1/jobs", json={"program_id": "sampler", "backend": "fake_manila",
                                                    "params": {"pubs": [1]}})).json()["id"]
    tags = [f"{i:03d}" + "t" * 252 for i in range(100)]
    assert (await client.put(f"/api/v1/jobs/{job}/tags", json={"tags": tags})).status_code == 204


@pytest.mark.parametrize("declared", ["9" * 5000, "\u00b2", "-1", "1e9"])
async def test_odd_content_length_headers_are_no_server_error(client: httpx.AsyncClient, declared: str) -> None:
    headers = {"Content-Length": declared.encode("latin-1")}
    request = client.build_request("POST", "/api/v1/sessions", content=b"{}", headers=headers)
    response = await client.send(request)
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/jobs"), ("PUT", "/api/v1/jobs/x/tags"), ("POST", "/api/v1/sessions"),
     ("PATCH", "/api/v1/sessions/x")],
)
async def test_runtime_routes_authenticate_before_reading_the_body(method: str, path: str) -> None:
    async with in_process_api(api_key=None) as http:
        body = Chunks(b"{", total=3200)
        response = await asyncio.wait_for(http.request(method, path, content=body), timeout=20)
        assert_ibm_error(response, 401)
        assert body.pulled == 0


@pytest.mark.parametrize("path", ["/search/v3/resources/search", "/v3/resources/search", "/api/v1/jobs/x/cancel"])
async def test_routes_without_a_body_never_read_one(client: httpx.AsyncClient, path: str) -> None:
    body = Chunks(b"{", total=3200)
    response = await asyncio.wait_for(client.post(path, content=body), timeout=20)
    assert response.status_code in (200, 404)
    assert body.pulled == 0


async def test_trickling_body_gets_408() -> None:
    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"program_id": "sampler", '
        await asyncio.sleep(30)
        yield b'"backend": "fake_manila"}'

    async with in_process_api({"QRS_BODY_TIMEOUT": "0.5"}) as http:
        started = time.monotonic()
        response = await http.post("/api/v1/jobs", content=trickle())
        # Answered at the 0.5 s body deadline, long before the body's second part would come.
        assert time.monotonic() - started < 15
        assert_ibm_error(response, 408, "request_timeout")
        assert response.headers["connection"] == "close"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/jobs", b'{"program_id": "\xff\xfe", "backend": "fake_manila", "params": {"pubs": [1]}}'),
        ("/api/v1/jobs", b'{"program_id": "sampler", "backend": "fake_manila", "tags": ["\xc3"], '
                         b'"params": {"pubs": [1]}}'),
        ("/api/v1/sessions", b'{"mode": "\xff", "backend": "fake_manila"}'),
        ("/api/v1/jobs", b'{"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [1], '
                         b'"options": {"\xff": 1}}}'),
        ("/api/v1/jobs", b'{"program_id": "executor", "backend": "fake_manila", "params": {"schema_version": '
                         b'"v1.0", "quantum_program": {"\xff": 1, "items": []}}}'),
        ("/api/v1/jobs", b'{"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [1], '
                         b'"options": ' + b"[" * 5000 + b"]" * 5000 + b"}}"),
        ("/api/v1/jobs", b'{"program_id": "sampler", "backend": "fake_manila", "params": '
                         + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"}"),
        ("/api/v1/sessions", b"[" * 100_00 + b"]" * 100_00),
    ],
)
async def test_undecodable_bodies_are_400(client: httpx.AsyncClient, path: str, body: bytes) -> None:
    assert_ibm_error(await client.post(path, content=body), 400)


async def test_invalid_utf8_tags_update_is_400(client: httpx.AsyncClient) -> None:
    job = (await client.post("/api/v1/jobs", json={"program_id": "sampler", "backend": "fake_manila",
                                                    "params": {"pubs": [1]}})).json()["id"]
    assert_ibm_error(await client.put(f"/api/v1/jobs/{job}/tags", content=b'{"tags": ["\xff"]}'), 400)


async def test_token_without_exp_or_with_bad_claims_is_401(client: httpx.AsyncClient) -> None:
    secret = client.app_state["jwt_secret"]  # type: ignore[attr-defined]
    for claims in ({"sub": "x"}, {"sub": "x", "exp": "soon"}, {"sub": ["x"], "exp": 2**40}):
        token = jwt.encode(claims, secret, algorithm="HS256")
        response = await client.get("/api/v1/backends", headers={"Authorization": f"Bearer {token}"})
        assert_ibm_error(response, 401)


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer a.b.c", "Bearer \u00ff\u00fe", "Basic abc", "apikey", "Bearer " + "a" * 10_000],
)
async def test_malformed_authorization_is_401(client: httpx.AsyncClient, authorization: str) -> None:
    response = await client.get("/api/v1/backends", headers={"Authorization": authorization.encode("latin-1")})
    assert_ibm_error(response, 401)


@pytest.mark.parametrize(
    "query",
    [
        "created_after=9999-12-31T23:59:59-23:59",
        "created_before=0001-01-01T00:00:00%2B23:59",
        "limit=" + "9" * 5000,
        "offset=-1",
        "pending=maybe",
        "sort=sideways",
        "created_after=%ff%fe",
        "tags=%ff&backend=%c3",
    ],
)
async def test_malformed_list_queries_are_4xx(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/api/v1/jobs?{query}")
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert_ibm_error(response, 400)


async def test_long_query_string_is_414_in_ibm_format(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/jobs?tags=" + "a" * 60_000)
    assert_ibm_error(response, 414, "uri_too_long")


@pytest.mark.parametrize("path", ["/api/v1/backends/", "/experimental/api/v1/backends/", "/a/b/api/v1/jobs/"])
async def test_trailing_slash_is_served_not_redirected(path: str) -> None:
    # Any Host allowed: a redirect would have pointed at whatever host the caller named.
    async with in_process_api({"QRS_ALLOWED_HOSTS": "*"}) as client:
        response = await client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 200, (response.status_code, response.headers.get("location"))


async def test_unknown_paths_and_methods_are_ibm_errors(client: httpx.AsyncClient) -> None:
    assert_ibm_error(await client.get("/api/v1/nowhere/"), 404)
    assert_ibm_error(await client.get("/nowhere"), 404)
    assert_ibm_error(await client.delete("/api/v1/backends"), 405)


async def test_a_submission_with_more_than_100_tags_is_400(client: httpx.AsyncClient) -> None:
    body = {"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [1]}}
    response = await client.post("/api/v1/jobs", json={**body, "tags": [f"t{i}" for i in range(101)]})
    assert_ibm_error(response, 400)
    assert (await client.post("/api/v1/jobs", json={**body, "tags": [f"t{i}" for i in range(100)]})).status_code == 200


async def test_client_hanging_up_mid_body_is_no_server_error(caplog: pytest.LogCaptureFixture) -> None:
    async with in_process_api() as http:
        app = http._transport.app  # type: ignore[attr-defined]
        token = http.headers["Authorization"].encode()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/api/v1/jobs", "raw_path": b"/api/v1/jobs", "query_string": b"", "root_path": "",
            "headers": [(b"authorization", token), (b"host", b"localhost")], "client": ("1.2.3.4", 5), "server": None,
        }
        messages = iter([{"type": "http.request", "body": b'{"program_id"', "more_body": True},
                         {"type": "http.disconnect"}])
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return next(messages)

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 400
        assert "unhandled error" not in caplog.text
