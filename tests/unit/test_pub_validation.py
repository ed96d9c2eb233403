"""POST /jobs refuses PUBs the worker could not run: integers too long for Python (4301+
digits), precisions whose ceil(1 / precision**2) shots leave the server's shot limit or overflow,
and PUB lists of the wrong length (``[[]]``): 400 in IBM's format, never a 500 or a failed job."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.conftest import in_process_api
from tests.unit.test_request_limits import assert_ibm_error

HUGE = "1" + "0" * 4300  # 4301 digits: past Python's int/str conversion limit


def _body(program: str, pubs: str, options: str = "{}") -> bytes:
    # Written by hand: json.dumps cannot write an int of 4301 digits either.
    params = f'{{"pubs": {pubs}, "options": {options}, "version": 2}}'
    return f'{{"program_id": "{program}", "backend": "fake_manila", "params": {params}}}'.encode()


async def _post(http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await http.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"})


def _message(response: httpx.Response) -> str:
    return str(assert_ibm_error(response, 400, "bad_request")["errors"][0]["message"])  # type: ignore[index]


@pytest.mark.parametrize(
    ("program", "pubs", "options", "fragment"),
    [
        (
            "sampler",
            f'[["c", null, {HUGE}]]',
            "{}",
            "PUB 0: 10000000000000000000…(4301 digits) shots requested, at most",
        ),
        ("sampler", f'[["c", null, -{HUGE}]]', "{}", "PUB 0: -1000000000000000000…(4301 digits) shots requested"),
        ("sampler", f'[["c", null, {"9" * 300}]]', "{}", "PUB 0: an integer of more than 40 digits shots requested"),
        ("sampler", '[["c"]]', f'{{"default_shots": {HUGE}}}', "Integer value out of range"),
        ("estimator", f'[["c", "Z", null, {HUGE}]]', "{}", "PUB 0: precision must be below 1e+150, got 1000"),
        ("estimator", f'[["c", "Z", null, {"9" * 400}]]', "{}", "precision must be below 1e+150"),
        ("estimator", '[["c", "Z", null, 1e200]]', "{}", "PUB 0: precision must be below 1e+150, got 1e+200."),
        ("estimator", '[["c", "Z", null, 1e-300]]', "{}", "PUB 0: precision 1e-300 needs more than 10000000 shots"),
        ("estimator", '[["c", "Z", null, 1e-320]]', "{}", "the smallest precision allowed is 0.000316228."),
        ("estimator", '[["c", "Z", null, 0.0003]]', "{}", "precision 0.0003 needs more than 10000000 shots"),
        ("estimator", '[["c", "Z"]]', '{"default_precision": 1e-300}', "options.default_precision: precision 1e-300"),
        ("estimator", '[["c", "Z", null, 0]]', "{}", "PUB 0: precision must be a positive number, got 0."),
        ("sampler", "[[]]", "{}", "PUB 0: the length of pub must be 1, 2 or 3, but length 0 is given."),
        ("sampler", '[["c"], ["c", null, 5, 6]]', "{}", "PUB 1: the length of pub must be 1, 2 or 3, but length 4"),
        ("estimator", "[[]]", "{}", "PUB 0: the length of pub must be 2, 3 or 4, but length 0 is given."),
        ("estimator", '[["c"]]', "{}", "PUB 0: the length of pub must be 2, 3 or 4, but length 1 is given."),
        ("estimator", '[["c", "Z", null, 0.1, 5]]', "{}", "but length 5 is given"),
    ],
)
async def test_unrunnable_pubs_are_400_at_submission(program: str, pubs: str, options: str, fragment: str) -> None:
    async with in_process_api() as http:
        message = _message(await _post(http, _body(program, pubs, options)))
    assert fragment in message, message
    assert len(message) < 300


async def test_the_precision_bound_follows_max_shots() -> None:
    """shots = ceil(1 / precision**2) <= QRS_MAX_SHOTS: with 100 shots, precision 0.1 is the smallest."""
    async with in_process_api({"QRS_MAX_SHOTS": "100"}) as http:
        for precision in ("0.1", "0.5", "1", "3", "1e149"):
            response = await _post(http, _body("estimator", f'[["c", "Z", null, {precision}]]'))
            assert response.status_code == 200, (precision, response.text)
        refused = _message(await _post(http, _body("estimator", '[["c", "Z", null, 0.0999]]')))
        assert "needs more than 100 shots" in refused and "smallest precision allowed is 0.1." in refused
        assert (await _post(http, _body("sampler", '[["c", null, 100], ["c"], ["c", null]]'))).status_code == 200
