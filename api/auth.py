"""Authentication: the IAM token exchange, Global Search and Catalog, and per-request checks.

Mirrors the three IBM Cloud services the client calls before the runtime API (docs/protocol.md §2):

* ``POST /identity/token`` (IAM): an API key in a form body becomes an HS256 JWT with integer
  ``exp``/``iat`` (the client refuses tokens without them and then stalls 60 s per call).
* ``POST /search/v3/resources/search`` (Global Search): the instances the key may use.
* ``GET /catalog/{plan_id}`` (Global Catalog): the plan name and pricing type of an instance.

Runtime calls carry ``Authorization: Bearer <JWT>`` (verified: signature and expiry) or, when
the client fell back, ``Authorization: apikey <key>``. The instance is the ``Service-CRN`` header.
"""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qs

import jwt
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from qiskit_runtime_server.api.body import read_limited
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared.errors import Forbidden, InvalidRequest, NotAuthorized

PLAN_ID = "qiskit-runtime-server-plan"


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: a stable hash of the API key, and the instance CRN of the call."""

    user: str
    instance: str


def key_id(api_key: str) -> str:
    """A stable, non-reversible identifier for an API key (never store the key itself)."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


async def issue_token(request: Request) -> Response:
    """``POST /identity/token``: exchange ``apikey`` (form field) for a bearer JWT.

    Raises:
        InvalidRequest: no ``apikey`` in the form body (400).
        PayloadTooLarge: a body over ``QRS_MAX_SMALL_BODY_BYTES`` (413); nothing more is read.
    """
    body = await read_limited(request, app_state(request)["settings"].max_small_body_bytes)
    form = parse_qs(body.decode("utf-8", "replace"))
    api_key = (form.get("apikey") or [""])[0]
    if not api_key or not app_state(request)["access"].knows(key_id(api_key)):
        raise InvalidRequest("Provided API key could not be found.")
    settings = app_state(request)["settings"]
    now = int(time.time())
    claims = {"sub": key_id(api_key), "iam_id": key_id(api_key), "iat": now, "exp": now + settings.token_ttl}
    token = jwt.encode(claims, app_state(request)["jwt_secret"], algorithm="HS256")
    return MsgspecResponse(
        {
            "access_token": token,
            "refresh_token": "not_supported",
            "token_type": "Bearer",
            "expires_in": settings.token_ttl,
            "expiration": claims["exp"],
            "scope": "ibm openid",
        }
    )


async def search_resources(request: Request) -> Response:
    """``POST /search/v3/resources/search``: one item per instance the caller may use."""
    user = principal_user(request)
    settings = app_state(request)["settings"]
    allowed = app_state(request)["access"].instances(user)
    crns = [settings.instance] if allowed is None else sorted(allowed)
    items = [
        {
            "crn": crn,
            "name": "qiskit-runtime-server" if crn == settings.instance else crn.rstrip(":").rsplit(":", 1)[-1],
            "service_plan_unique_id": PLAN_ID,
            "tags": [],
            "doc": {"extensions": {"virtual_resource": "qiskit-runtime-server"}},
        }
        for crn in crns
    ]
    return MsgspecResponse({"items": items, "search_cursor": None, "limit": 100})


async def catalog_plan(request: Request) -> Response:
    """``GET /catalog/{plan_id}``: plan display name and pricing type."""
    principal_user(request)
    return MsgspecResponse(
        {
            "id": request.path_params["plan_id"],
            "overview_ui": {"en": {"display_name": "Open"}},
            "metadata": {"pricing": {"type": "free"}},
        }
    )


def principal_user(request: Request) -> str:
    """The key id of the caller, from a verified bearer JWT or an ``apikey`` header.

    Raises:
        NotAuthorized: no credentials, or a token that is invalid or expired (401).
    """
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and credential:
        return _verified_subject(credential, app_state(request)["jwt_secret"])
    if scheme == "apikey" and credential:
        if not app_state(request)["access"].knows(key_id(credential)):
            raise NotAuthorized("The API key is not valid.")
        return key_id(credential)
    raise NotAuthorized("Missing or malformed Authorization header.")


# Tokens already verified, so that a client polling every 0.1 s costs one HMAC per token, not
# one per request: (secret, token) -> (subject, expiry). Bounded; cleared wholesale when full.
_VERIFIED: dict[tuple[str, str], tuple[str, int]] = {}
_VERIFIED_MAX = 10_000


def _verified_subject(token: str, secret: str) -> str:
    cached = _VERIFIED.get((secret, token))
    if cached is not None and cached[1] > time.time():
        return cached[0]
    try:
        # Our tokens always carry exp and iat; one without exp would never expire.
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise NotAuthorized("The access token has expired.") from None
    except jwt.PyJWTError:
        raise NotAuthorized("The access token is invalid.") from None
    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise NotAuthorized("The access token is invalid.")
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[(secret, token)] = (subject, int(claims["exp"]))
    return subject


def authenticate(request: Request) -> Principal:
    """The :class:`Principal` of a runtime API call (instance from ``Service-CRN``).

    Raises:
        NotAuthorized: missing or invalid credentials (401).
        Forbidden: access control is on and the key may not use that instance (403).
    """
    user = principal_user(request)
    instance = request.headers.get("service-crn") or app_state(request)["settings"].instance
    if not app_state(request)["access"].allows(user, instance):
        raise Forbidden(f"The API key is not authorized for instance {instance}.")
    return Principal(user=user, instance=instance)
