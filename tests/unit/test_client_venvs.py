"""tests/clients/venvs.py without pip: reuse, adoption and rebuild of a half-built venv, and the lock."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.clients import venvs


def fake_venv(path: Path) -> None:
    """A folder shaped like a venv (bin/python, site-packages), as old as a settled build."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("")
    (path / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    old = time.time() - 3600
    for folder in (path / "lib" / "python3.11" / "site-packages", path):
        os.utime(folder, (old, old))


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace pip by a recorder; a folder counts as working once it holds ``works``."""
    calls: list[str] = []

    def build(path: Path, version: str, log: Path) -> None:
        calls.append(version)
        time.sleep(0.2)  # long enough for a second caller to queue on the lock
        if not path.exists():
            fake_venv(path)
        (path / "works").write_text("")

    monkeypatch.setattr(venvs, "_build", build)
    monkeypatch.setattr(venvs, "_probe", lambda path, version: (path / "works").exists())
    monkeypatch.setattr(venvs, "_versions_of", lambda python: {"qiskit-ibm-runtime": "x"})
    monkeypatch.setattr(venvs, "SETTLE_SECONDS", 5.0)
    return calls


def test_builds_once_then_reuses(tmp_path: Path, builds: list[str]) -> None:
    first = venvs.ensure_venv("0.51.0", tmp_path)
    assert first.built and venvs.is_complete(first.path)
    assert venvs.read_marker(first.path)["adopted"] is False
    again = venvs.ensure_venv("0.51.0", tmp_path)
    assert not again.built and builds == ["0.51.0"]


def test_half_built_venv_is_rebuilt(tmp_path: Path, builds: list[str]) -> None:
    fake_venv(tmp_path / "0.40.1")  # no marker, does not import, settled: a killed build
    result = venvs.ensure_venv("0.40.1", tmp_path)
    assert result.built and builds == ["0.40.1"] and venvs.is_complete(result.path)


def test_complete_venv_without_marker_is_adopted(tmp_path: Path, builds: list[str]) -> None:
    fake_venv(tmp_path / "0.40.1")
    (tmp_path / "0.40.1" / "works").write_text("")  # built by someone else, works
    result = venvs.ensure_venv("0.40.1", tmp_path)
    assert not result.built and builds == [] and venvs.read_marker(result.path)["adopted"] is True


def test_two_callers_build_once(tmp_path: Path, builds: list[str]) -> None:
    results: list[venvs.VenvResult] = []
    threads = [threading.Thread(target=lambda: results.append(venvs.ensure_venv("0.49.0", tmp_path))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == ["0.49.0"] and sorted(r.built for r in results) == [False, True]


def test_parallel_builds_report_failures(tmp_path: Path, builds: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Path, version: str, log: Path) -> None:
        raise RuntimeError(f"pip failed for {version}")

    monkeypatch.setattr(venvs, "_build", broken)
    results = venvs.ensure_venvs(["0.41.1", "0.42.0"], tmp_path, workers=2)
    assert all(isinstance(r, RuntimeError) for r in results.values())
    assert not any(venvs.is_complete(tmp_path / v) for v in results)
