"""Reading and decoding request bodies: counted while they stream in, refused at their limit.

Every route that reads a body calls :func:`read_limited` (after authenticating, as IBM does), so a
body is never buffered past its limit, chunked or not, and a body that trickles in is refused
after ``QRS_BODY_TIMEOUT`` seconds. :func:`decode_json` turns every way a body can fail to decode
(malformed or truncated JSON, invalid UTF-8, nesting deep enough to exhaust the recursion limit,
wrong types) into a 400: the client retries 5xx, POST included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared.errors import InvalidRequest, PayloadTooLarge, RequestTimeout

T = TypeVar("T")


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes, read within ``QRS_BODY_TIMEOUT`` seconds.

    A declared ``Content-Length`` over the limit is refused before anything is read; otherwise
    the body is counted chunk by chunk as it streams in (chunked transfer included) and reading
    stops at the first chunk past the limit.

    Raises:
        PayloadTooLarge: the body is (or declares to be) longer than ``limit`` bytes (413).
        RequestTimeout: the body did not arrive within ``QRS_BODY_TIMEOUT`` seconds (408,
            answered with ``Connection: close``).
        InvalidRequest: the client disconnected mid-body (400, which nobody reads).
    """
    declared = request.headers.get("content-length", "")
    # isdigit() alone admits "²" and thousands of digits, which int() refuses; the server has
    # already refused a malformed Content-Length, but this app may run behind another server.
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(app_state(request)["settings"].body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout("The request body was not received in time.") from None
    except ClientDisconnect:
        # Nobody reads this answer; it keeps a client that hung up out of the server-error log.
        raise InvalidRequest("The client disconnected before sending the whole body.") from None
    return b"".join(chunks)


def decode_json(decode: Callable[[Any], T], data: bytes | msgspec.Raw, what: str) -> T:
    """``decode(data)`` with every decoding failure reported as a client mistake.

    Args:
        decode: a msgspec decoder's ``decode`` (built once per type, module level).
        data: the JSON text.
        what: names the body in the message, e.g. ``"job submission"``.

    Raises:
        InvalidRequest: malformed JSON, invalid UTF-8, nesting too deep or a schema mismatch (400).
    """
    try:
        return decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Invalid {what}: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"Invalid {what}: JSON nested too deeply.") from None
