"""docker-compose.yml and the Dockerfiles, checked without a Docker engine.

The compose file is parsed as YAML (and validated by ``docker-compose config`` when that tool
is installed); its variables are checked against the server's settings so a misspelt one
cannot be silently ignored; the Dockerfiles' commands are checked against the CLI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from qiskit_runtime_server.cli import _parser
from qiskit_runtime_server.shared.settings import Settings, _env_name

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SETTING_VARIABLES = {_env_name(f) for f in Settings.__struct_fields__}
GPU_SERVICES = {name: s for name, s in SERVICES.items() if "gpu" in s.get("profiles", [])}


def test_redis_persists_with_append_only_file_on_a_named_volume() -> None:
    redis = SERVICES["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in COMPOSE["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_api_waits_for_healthy_redis_and_listens_on_8000() -> None:
    api = SERVICES["api"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["ports"] == ["${QRS_API_PORT:-8000}:8000"]
    assert api["environment"]["QRS_PORT"] == "8000"
    assert api["build"]["dockerfile"] == "Dockerfile.api"


def test_cpu_worker_can_scale() -> None:
    worker = SERVICES["worker"]
    # --scale needs no fixed container name, host port or worker id.
    assert not {"container_name", "ports"} & set(worker)
    assert "QRS_WORKER_ID" not in worker["environment"]
    assert worker["environment"]["QRS_DEVICE"] == "CPU"
    assert worker["build"]["target"] == "cpu"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_gpu_profile_pins_one_worker_per_gpu() -> None:
    assert len(GPU_SERVICES) >= 2
    pinned = []
    for service in GPU_SERVICES.values():
        env = service["environment"]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        pinned.append(device["device_ids"][0])
        # The single GPU a container is given is its CUDA device 0.
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
        assert env["QRS_DEVICE"] == "GPU"
        assert service["build"]["target"] == "gpu"
    assert len(set(pinned)) == len(pinned)
    assert len({s["environment"]["QRS_WORKER_ID"] for s in GPU_SERVICES.values()}) == len(GPU_SERVICES)


def test_every_variable_is_a_setting() -> None:
    known = SETTING_VARIABLES | {"CUDA_VISIBLE_DEVICES"}
    for name, service in SERVICES.items():
        unknown = set(service.get("environment", {})) - known
        assert not unknown, f"{name}: {unknown}"


def test_compose_config_validates() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed")
    subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], check=True, cwd=ROOT)


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.worker"])
def test_images_run_as_non_root_with_a_healthcheck(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    final_stages = [s for s in stages if "ENTRYPOINT" in s]
    assert final_stages
    for stage in final_stages:
        assert re.search(r"^USER qrs$", stage, flags=re.M)
        assert "HEALTHCHECK" in stage
        command = re.search(r'^CMD \["([\w-]+)"\]', stage, flags=re.M)
        assert command is not None
        assert _parser().parse_args([command.group(1)]).command == command.group(1)
        healthcheck = re.search(r'"qiskit-runtime-server", "([\w-]+)"', stage)
        if healthcheck:
            assert _parser().parse_args([healthcheck.group(1)]).command == healthcheck.group(1)


def test_api_image_requirements_leave_qiskit_out() -> None:
    text = (ROOT / "Dockerfile.api").read_text()
    one_liner = re.search(r'RUN python -c "(.*?)" > /tmp/api-requirements.txt', text, flags=re.S)
    assert one_liner is not None
    code = one_liner.group(1).replace("\\\n", "").replace('\\"', '"').replace("\\n", "\\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    requirements = out.split()
    assert requirements and not [r for r in requirements if r.startswith("qiskit")]
    assert any(r.startswith("prometheus_client") for r in requirements)


def test_worker_image_gpu_target_swaps_aer_for_aer_gpu() -> None:
    gpu = (ROOT / "Dockerfile.worker").read_text().split(" AS gpu", 1)[1]
    assert "nvidia/cuda" in (ROOT / "Dockerfile.worker").read_text()
    assert "pip uninstall -y qiskit-aer" in gpu and "AER_GPU_PACKAGE" in gpu
    assert "QRS_DEVICE=GPU" in gpu


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.worker"])
def test_dockerfiles_build_offline_without_a_frontend_image(dockerfile: str) -> None:
    # "# syntax=" makes BuildKit fetch a frontend image from a registry before building.
    assert not re.search(r"^#\s*syntax\s*=", (ROOT / dockerfile).read_text(), flags=re.M | re.I)


def test_one_client_version_for_both_images_within_pyproject_range() -> None:
    from packaging.requirements import Requirement

    defaults = {}
    for dockerfile in ("Dockerfile.api", "Dockerfile.worker"):
        text = (ROOT / dockerfile).read_text()
        (default,) = re.findall(r"^ARG CLIENT_VERSION=(\S+)$", text, flags=re.M)
        defaults[dockerfile] = default
        assert '"qiskit-ibm-runtime==${CLIENT_VERSION}"' in text
    assert len(set(defaults.values())) == 1
    builds = [SERVICES["api"]["build"], SERVICES["worker"]["build"], *(s["build"] for s in GPU_SERVICES.values())]
    args = {b["args"]["CLIENT_VERSION"] for b in builds}
    assert args == {"${QRS_CLIENT_VERSION:-" + defaults["Dockerfile.api"] + "}"}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (client,) = [Requirement(d) for d in pyproject["project"]["dependencies"] if d.startswith("qiskit-ibm-runtime")]
    assert client.specifier.contains(defaults["Dockerfile.api"])


def test_api_answers_its_service_name_and_the_published_port() -> None:
    """The Host allow-list (api/origins.py) of the compose API: loopback names for the published
    port, the service name for other containers, QRS_PUBLIC_URL's host added by the server."""
    from qiskit_runtime_server.api.origins import allowed_hosts
    from qiskit_runtime_server.shared.settings import load_settings

    environment = SERVICES["api"]["environment"]
    default = re.fullmatch(r"\$\{QRS_ALLOWED_HOSTS:-(.*)\}", environment["QRS_ALLOWED_HOSTS"])
    assert default is not None
    public = re.fullmatch(r"\$\{QRS_PUBLIC_URL:-(.*)\}", environment["QRS_PUBLIC_URL"])
    assert public is not None
    settings = load_settings(
        {"QRS_HOST": environment["QRS_HOST"], "QRS_ALLOWED_HOSTS": default[1], "QRS_PUBLIC_URL": public[1]}
    )
    assert {"localhost", "127.0.0.1", "[::1]", "api"} <= (allowed_hosts(settings) or set())
    # The image's healthcheck asks 127.0.0.1.
    assert "http://127.0.0.1:" in (ROOT / "Dockerfile.api").read_text()
