"""The dashboard's static files ship in the wheel (package data): no build step for the user."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.e2e.test_packaging import wheel  # noqa: F401  (the fixture: the project's wheel)

pytestmark = pytest.mark.e2e


def test_wheel_carries_the_dashboard_page_and_vendored_chart_library(wheel: Path) -> None:  # noqa: F811
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        static = "qiskit_runtime_server/api/dashboard/static/"
        for name in ("index.html", "dashboard.js", "dashboard.css", "vendor/chart.umd.min.js"):
            assert static + name in names, name
        assert "MIT License" in archive.read(static + "vendor/chart.js.LICENSE.md").decode()
        assert "qiskit_runtime_server/api/dashboard/routes.py" in names
