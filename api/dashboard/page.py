"""``GET /dashboard``: the dashboard page, and its static files (package data) under ``/dashboard/static``."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"


async def index(request: Request) -> Response:
    """``GET /dashboard``: the single page; its views are chosen by the URL's query string."""
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


routes = [
    Route("/dashboard", index),
    Mount("/dashboard/static", app=StaticFiles(directory=STATIC), name="dashboard-static"),
]
