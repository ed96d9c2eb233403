"""The installed wheel: one import package, and a server immune to the directory it starts in.

User repositories often hold their own ``shared/``, ``worker/``, ``api.py`` or ``cli.py``. The
wheel must put nothing but ``qiskit_runtime_server`` at the top of site-packages, and the
simulation process must not import a folder of the current directory in place of ours.
"""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, Deployment, ServerProcess, free_port, server_env, wait_ready

pytestmark = pytest.mark.e2e

# Importable but empty: a process that imports one of these in place of ours keeps it in
# sys.modules, and every import of our modules under that name fails from then on.
_SHADOW = '"""The user\'s own {name}, not the server\'s."""\n'


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built the way ``pip install .`` builds it."""
    folder = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(ROOT)], check=True)
    (built,) = folder.glob("qiskit_runtime_server-*.whl")
    return built


def _venv_with(wheel: Path, folder: Path) -> Path:
    """A fresh venv holding only the wheel; its dependencies come from this test's environment."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)], check=True
    )
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Plain path lines: the outer environment's .pth files (our editable install among them)
    # are not run, so only the wheel provides qiskit_runtime_server.
    Path(target, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return folder / "bin"


def test_wheel_installs_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    top_level = {name.split("/", 1)[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"qiskit_runtime_server"}, top_level
    assert "qiskit-runtime-server = qiskit_runtime_server.cli:main" in scripts
    assert "qiskit_runtime_server/worker/tasks.py" in names
    assert "qiskit_runtime_server/api/app.py" in names


def test_job_runs_from_a_directory_that_shadows_our_folders(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _venv_with(wheel, tmp_path / "venv")
    project = tmp_path / "user-project"
    for package in ("shared", "worker", "api", "qiskit_runtime_server"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(_SHADOW.format(name=package))
    for module in ("api", "cli"):
        (project / f"{module}.py").write_text(_SHADOW.format(name=module))

    port = free_port()
    proc = ServerProcess([], server_env(port), tmp_path / "server.log")
    proc.start(command=[str(bin_dir / "qiskit-runtime-server")], cwd=project)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        for key, value in Deployment(base, {}).client_env().items():
            monkeypatch.setenv(key, value)
        from qiskit import QuantumCircuit
        from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2

        backend = QiskitRuntimeService().backend("fake_manila")
        circuit = QuantumCircuit(2)
        circuit.h(0)
        circuit.cx(0, 1)
        circuit.measure_all()
        from qiskit.transpiler import generate_preset_pass_manager

        isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(circuit)
        job = SamplerV2(mode=backend).run([isa], shots=200)
        counts = job.result()[0].data.meas.get_counts()
        assert sum(counts.values()) == 200
        assert job.status() == "DONE"
    finally:
        proc.stop()
