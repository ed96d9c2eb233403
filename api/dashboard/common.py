"""What the dashboard's views share: the job states and the instances a request may see."""

from __future__ import annotations

from starlette.requests import Request

from qiskit_runtime_server.api.dashboard.viewer import Viewer, request_viewer
from qiskit_runtime_server.shared.models import JobStatus

STATUSES = [s.value for s in JobStatus]


def caller_scopes(request: Request) -> tuple[Viewer, list[str]]:
    """The caller and the instances it may see, narrowed to ``instance=`` when the query names one."""
    viewer = request_viewer(request)
    return viewer, viewer.scopes(request.query_params.get("instance") or None)
