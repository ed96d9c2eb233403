"""JSON responses encoded with msgspec, and IBM-format error responses."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from starlette.responses import JSONResponse, Response

from qiskit_runtime_server.shared.errors import ApiError

_encoder = msgspec.json.Encoder()


class MsgspecResponse(JSONResponse):
    """``JSONResponse`` rendered by msgspec (handles Structs, ``msgspec.Raw`` and is faster)."""

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


class RawJSONResponse(Response):
    """Already-encoded JSON bytes (cached backend documents)."""

    media_type = "application/json"


def error_response(error: ApiError, trace: str | None = None) -> MsgspecResponse:
    """The ``{"errors": [...], "trace": ...}`` body of ``error`` with its status code.

    Errors that leave the connection unusable (a body still trickling in) also answer
    ``Connection: close``, so that the server closes it after the answer.
    """
    headers = {"connection": "close"} if getattr(error, "close_connection", False) else None
    return MsgspecResponse(error.body(trace or uuid.uuid4().hex), status_code=error.status_code, headers=headers)
