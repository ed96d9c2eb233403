"""A cached virtual environment with QRMI (PyPI ``qrmi``), the second client of the client tests.

It lives in ``$QRS_CLIENT_VENV_CACHE/qrmi-<version>`` beside the qiskit-ibm-runtime venvs
(tests/clients/venvs.py) and holds ``qrmi`` alone (its Rust core and two small Python
dependencies): the inputs QRMI sends are written by the test process, which has qiskit. The
marker is written after the install and an import check, under the same kind of lock.

Run as a script to build (or check) it: ``python -m tests.clients.qrmi_venv``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.clients.venvs import MARKER, _locked, _run, cache_root, venv_python

QRMI_VERSION = "0.26.4"


def qrmi_venv_path(version: str = QRMI_VERSION, root: Path | None = None) -> Path:
    """Where the QRMI venv of ``version`` lives."""
    return (root or cache_root()) / f"qrmi-{version}"


def _probe(path: Path, version: str) -> bool:
    python = venv_python(path)
    if not python.exists():
        return False
    code = f"import importlib.metadata as m; assert m.version('qrmi') == {version!r}; import qrmi\n"
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_qrmi_venv(version: str = QRMI_VERSION, root: Path | None = None) -> Path:
    """The interpreter of a complete QRMI venv, built when missing (safe from many processes)."""
    path = qrmi_venv_path(version, root)
    if (path / MARKER).is_file() and _probe(path, version):
        return venv_python(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / f"qrmi-{version}.lock"):
        if (path / MARKER).is_file() and _probe(path, version):
            return venv_python(path)
        started = time.monotonic()
        if path.exists():
            shutil.rmtree(path)
        log = path.parent / f"qrmi-{version}.log"
        log.write_text("")
        _run([sys.executable, "-m", "venv", str(path)], log, timeout=300)
        pip = [str(venv_python(path)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        _run([*pip, f"qrmi=={version}"], log, timeout=1200)
        if not _probe(path, version):
            raise RuntimeError(f"venv {path}: qrmi {version} installed but does not import; log {log}")
        info = {"package": "qrmi", "version": version, "built_seconds": round(time.monotonic() - started, 1)}
        (path / MARKER).write_text(json.dumps(info))
        return venv_python(path)


if __name__ == "__main__":
    print(ensure_qrmi_venv())
