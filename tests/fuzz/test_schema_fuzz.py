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
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from api.app import create_app
from api.openapi import openapi_document
from api.server import server_config
from shared.settings import load_settings
from tests.conftest import free_port

pytestmark = pytest.mark.fuzz

ENVIRON = {"QRS_STATUS_HOLD": "0", "QRS_BODY_TIMEOUT": "5", "QRS_MAX_PARAMS_BYTES": "1000000"}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))

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
