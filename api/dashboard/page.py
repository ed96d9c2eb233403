"""``GET /dashboard``: the dashboard page, and its static files (package data) under ``/dashboard/static``."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"


# The page loads only its own files: one stylesheet, Chart.js and dashboard.js (no inline script,
# style or event handler; scripts set styles through the DOM, which CSP allows), talks only to
# this server (fetch and the WebSocket: 'self' covers ws:/wss: on the same host), and may not be
# framed by any page (clickjacking). docs/security.md.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def index(request: Request) -> Response:
    """``GET /dashboard``: the single page; its views are chosen by the URL's query string."""
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


routes = [
    Route("/dashboard", index),
    Mount("/dashboard/static", app=StaticFiles(directory=STATIC), name="dashboard-static"),
]
