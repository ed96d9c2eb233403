"""API errors, rendered in IBM Cloud's error format.

IBM's runtime API answers errors with the ``ErrorContainer`` schema of its published OpenAPI::

    {"errors": [{"code": "...", "message": "...", "more_info": "..."}], "trace": "<request id>"}

The tree::

    ApiError (400 bad_request)
    ├── InvalidRequest (400 bad_request)
    ├── NotAuthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    │   ├── BackendNotFound
    │   ├── JobNotFound
    │   ├── ProgramNotFound
    │   └── SessionNotFound
    ├── Conflict (409 conflict)
    ├── RequestTimeout (408 request_timeout)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── UriTooLong (414 uri_too_long)
    └── HeadersTooLarge (431 request_header_fields_too_large)

Only client mistakes are ``ApiError``s. Anything else is a server fault and answers 500 in the
same format, without a traceback.
"""

from __future__ import annotations

MORE_INFO = "https://cloud.ibm.com/apidocs/quantum-computing"


class ApiError(Exception):
    """Base of all errors that reach the client; carries the HTTP status and IBM's error code."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self, trace: str) -> dict[str, object]:
        """The ``ErrorContainer`` JSON body for this error."""
        return {
            "errors": [{"code": self.code, "message": self.message, "more_info": MORE_INFO}],
            "trace": trace,
        }


class InvalidRequest(ApiError):
    pass


class NotAuthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class BackendNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Backend {name} not found.")


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job {job_id} not found.")


class ProgramNotFound(NotFound):
    def __init__(self, program_id: str) -> None:
        super().__init__(f"Program {program_id} not found.")


class SessionNotFound(NotFound):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session {session_id} not found.")


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(ApiError):
    """The request body did not arrive within ``QRS_BODY_TIMEOUT``; the connection is closed after it."""

    status_code = 408
    code = "request_timeout"
    close_connection = True


class UriTooLong(ApiError):
    """A query string over ``QRS_MAX_QUERY_BYTES`` (the server refuses a longer request line too)."""

    status_code = 414
    code = "uri_too_long"


class HeadersTooLarge(ApiError):
    """A request line plus headers over ``QRS_MAX_HEADER_BYTES`` (answered by the HTTP server)."""

    status_code = 431
    code = "request_header_fields_too_large"
