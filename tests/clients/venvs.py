"""Cached virtual environments, one per qiskit-ibm-runtime release, for the client-version matrix.

Each venv lives in ``$QRS_CLIENT_VENV_CACHE/<version>`` (default ``~/.cache/qrs-client-venvs/<version>``)
and is made with ``python -m venv`` then ``pip install qiskit-ibm-runtime==<version>``; pip picks the
qiskit (and its other dependencies) that release allows. A marker file is written only after the
install and an import check succeeded, so a half-built venv (a killed build) is thrown away and
built again.

Several processes may ask for the same venv (two pytest runs, another tool building at the same
path): a lock file per version serialises builds made through this module, and a venv found
complete but without the marker (built by someone else) is checked and adopted rather than rebuilt.
A folder without the marker that is still changing is waited for before it is judged.

Run as a script to build (or check) all of them: ``python -m tests.clients.venvs [version ...]``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The latest patch release of every minor from 0.40 to 0.51.
VERSIONS: tuple[str, ...] = (
    "0.40.1",
    "0.41.1",
    "0.42.0",
    "0.43.1",
    "0.44.1",
    "0.45.1",
    "0.46.1",
    "0.47.0",
    "0.48.0",
    "0.49.0",
    "0.50.0",
    "0.51.0",
)

MARKER = ".qrs-complete"
# A marker-less folder whose newest file is younger than this is taken to be under construction.
SETTLE_SECONDS = 120.0
BUILD_TIMEOUT_SECONDS = 1800.0
DEFAULT_WORKERS = 4


@dataclass(frozen=True)
class VenvResult:
    """Outcome of :func:`ensure_venv` for one version."""

    version: str
    path: Path
    python: Path
    seconds: float
    built: bool  # False: an existing complete venv was reused (or adopted)


def cache_root() -> Path:
    """The folder holding one venv per version (``QRS_CLIENT_VENV_CACHE`` or the per-user default)."""
    configured = os.environ.get("QRS_CLIENT_VENV_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "qrs-client-venvs"


def venv_path(version: str, root: Path | None = None) -> Path:
    """Where the venv for ``version`` lives."""
    return (root or cache_root()) / version


def venv_python(path: Path) -> Path:
    """The interpreter of the venv at ``path``."""
    return path / "bin" / "python"


def is_complete(path: Path) -> bool:
    """True when the venv at ``path`` carries the marker of a finished build."""
    return (path / MARKER).is_file() and venv_python(path).exists()


def _probe(path: Path, version: str) -> bool:
    """True when the venv imports the client of exactly ``version`` (and qiskit).

    qiskit-aer is not checked: it is only in the client's optional ``common`` extra, and the matrix
    script needs none (the server simulates).
    """
    python = venv_python(path)
    if not python.exists():
        return False
    code = (
        "import importlib.metadata as m, sys\n"
        f"assert m.version('qiskit-ibm-runtime') == {version!r}, m.version('qiskit-ibm-runtime')\n"
        "import qiskit, qiskit_ibm_runtime\n"
    )
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _newest_mtime(path: Path) -> float:
    """The newest modification time among the venv's folder and its site-packages entries."""
    newest = path.stat().st_mtime
    for site in path.glob("lib/python*/site-packages"):
        newest = max(newest, site.stat().st_mtime)
        for entry in site.iterdir():
            try:
                newest = max(newest, entry.stat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


def _versions_of(python: Path) -> dict[str, str]:
    """The versions of the client and of its main dependencies in a venv (for the marker and reports)."""
    code = (
        "import importlib.metadata as m, json\n"
        "names = ['qiskit-ibm-runtime', 'qiskit', 'qiskit-aer', 'requests', 'ibm-cloud-sdk-core']\n"
        "out = {}\n"
        "for n in names:\n"
        "    try:\n"
        "        out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        return {}
    parsed: dict[str, str] = json.loads(done.stdout)
    return parsed


def _write_marker(path: Path, version: str, seconds: float, adopted: bool) -> None:
    """Record a finished venv: written last, atomically, so its presence means the build succeeded."""
    info = {
        "version": version,
        "built_seconds": round(seconds, 1),
        "adopted": adopted,
        "packages": _versions_of(venv_python(path)),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    temporary = path / (MARKER + ".tmp")
    temporary.write_text(json.dumps(info, indent=1) + "\n")
    temporary.replace(path / MARKER)


def read_marker(path: Path) -> dict[str, object]:
    """The marker's contents (versions of the installed packages, build time), or {} without one."""
    try:
        parsed: dict[str, object] = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return parsed


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (blocking) for the duration of the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run(command: list[str], log: Path, timeout: float) -> None:
    """Run ``command`` appending its output to ``log``; raise RuntimeError with the log's tail on failure."""
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{command[0]} ... exited {done.returncode}; log {log}:\n{tail}")


def _build(path: Path, version: str, log: Path) -> None:
    """Make a fresh venv at ``path`` and install the client of ``version`` into it."""
    if path.exists():
        shutil.rmtree(path)
    log.write_text("")
    deadline = time.monotonic() + BUILD_TIMEOUT_SECONDS
    _run([sys.executable, "-m", "venv", str(path)], log, timeout=300)
    python = str(venv_python(path))
    _run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", f"qiskit-ibm-runtime=={version}"],
        log,
        timeout=max(60.0, deadline - time.monotonic()),
    )
    code = (
        "import importlib.metadata as m; "
        f"assert m.version('qiskit-ibm-runtime') == {version!r}; import qiskit_ibm_runtime"
    )
    _run([python, "-c", code], log, timeout=300)
    if not _probe(path, version):
        raise RuntimeError(f"venv {path}: qiskit-ibm-runtime {version} installed but does not import; log {log}")


def ensure_venv(version: str, root: Path | None = None) -> VenvResult:
    """Return a complete venv for ``version``, building it if needed (safe to call from many processes)."""
    started = time.monotonic()
    root = root or cache_root()
    path = venv_path(version, root)
    if is_complete(path):
        return VenvResult(version, path, venv_python(path), time.monotonic() - started, built=False)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{version}.lock"):
        if is_complete(path):  # built by another process while we waited for the lock
            return VenvResult(version, path, venv_python(path), time.monotonic() - started, built=False)
        # A folder without our marker: made by someone else, maybe still being filled. Wait until it
        # stops changing, then adopt it if it works, else rebuild.
        while path.exists() and not _probe(path, version):
            if time.time() - _newest_mtime(path) > SETTLE_SECONDS:
                break
            time.sleep(10)
        if path.exists() and _probe(path, version):
            _write_marker(path, version, time.monotonic() - started, adopted=True)
            return VenvResult(version, path, venv_python(path), time.monotonic() - started, built=False)
        _build(path, version, root / f"{version}.log")
        seconds = time.monotonic() - started
        _write_marker(path, version, seconds, adopted=False)
        return VenvResult(version, path, venv_python(path), seconds, built=True)


def ensure_venvs(
    versions: Iterable[str] = VERSIONS, root: Path | None = None, workers: int = DEFAULT_WORKERS
) -> dict[str, VenvResult | BaseException]:
    """Build (or reuse) the venvs of ``versions`` in parallel; a failed build maps to its exception."""
    wanted = list(versions)
    results: dict[str, VenvResult | BaseException] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {version: pool.submit(ensure_venv, version, root) for version in wanted}
        for version, future in futures.items():
            try:
                results[version] = future.result()
            except Exception as error:
                results[version] = error
    return results


def main(argv: list[str] | None = None) -> int:
    """Build the venvs named on the command line (all by default) and print one JSON line per version."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="*", default=list(VERSIONS))
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = ensure_venvs(args.versions, workers=args.workers)
    failed = 0
    for version, result in results.items():
        if isinstance(result, VenvResult):
            line = {"version": version, "ok": True, "built": result.built, "seconds": round(result.seconds, 1)}
            line["packages"] = read_marker(result.path).get("packages", {})
        else:
            failed += 1
            line = {"version": version, "ok": False, "error": str(result)[-2000:]}
        print(json.dumps(line), flush=True)
    print(json.dumps({"total_seconds": round(time.monotonic() - started, 1), "failed": failed}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
