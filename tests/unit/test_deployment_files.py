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
from qiskit_runtime_server.shared import settings_doc
from qiskit_runtime_server.shared.backends import default_catalog
from qiskit_runtime_server.shared.settings import Settings, _env_name, load_settings
from qiskit_runtime_server.worker.embedded import WORKER_OVERHEAD_MB, container_memory_warning

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
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
    # Published on this machine only unless QRS_PUBLISH_ADDRESS says otherwise.
    assert api["ports"] == ["${QRS_PUBLISH_ADDRESS:-127.0.0.1}:${QRS_API_PORT:-8000}:8000"]
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


SERVER_SERVICES = {"api", "worker", *GPU_SERVICES}
DEFAULT = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def test_every_setting_is_reachable_from_the_environment() -> None:
    """Each setting is passed to the API and every worker as ``${ITSELF...}``, so a shell variable
    or a line of .env sets it; the few the compose file sets itself are named, with why."""
    passed = SETTING_VARIABLES - set(settings_doc.COMPOSE_FIXED)
    assert set(settings_doc.COMPOSE_FIXED) <= SETTING_VARIABLES
    for name in SERVER_SERVICES:
        environment = SERVICES[name]["environment"]
        for variable in passed:
            match = DEFAULT.fullmatch(str(environment.get(variable)))
            assert match is not None and match["name"] == variable, f"{name}: {variable} is {environment.get(variable)}"
        assert not set(environment) & {"QRS_WORKERS"}
    assert SERVICES["api"]["environment"]["QRS_HOST"] == "0.0.0.0"


def test_every_compose_variable_is_a_setting_or_documented() -> None:
    used = set(settings_doc.compose_defaults(COMPOSE_TEXT))
    assert used - SETTING_VARIABLES == set(settings_doc.COMPOSE_VARIABLES)


def test_default_environment_is_accepted_by_the_server() -> None:
    """What compose gives a container when nothing is set: empty values mean the server's default."""
    for name in SERVER_SERVICES:
        environment = {
            key: DEFAULT.sub(lambda m: m["default"] or "", str(value))
            for key, value in SERVICES[name]["environment"].items()
        }
        settings = load_settings(environment)
        assert settings.token_ttl == Settings().token_ttl and settings.log_format == "json"
        assert settings.job_memory_limit == 4096 and settings.redis_url == "redis://redis:6379/0"


def test_env_example_is_current_and_lists_every_variable() -> None:
    committed = (ROOT / settings_doc.ENV_EXAMPLE_PATH).read_text(encoding="utf-8")
    assert committed == settings_doc.render_env_example(COMPOSE_TEXT), (
        f"{settings_doc.ENV_EXAMPLE_PATH} differs from shared/settings.py or docker-compose.yml; regenerate it "
        f"from the repository root with `{settings_doc.REGENERATE_ENV}` and commit the result."
    )
    assigned = dict(re.findall(r"^#([A-Z][A-Z0-9_]*)=(.*)$", committed, flags=re.M))
    fixed = set(re.findall(r"^# (QRS_[A-Z_]+): ", committed, flags=re.M))
    assert set(assigned) | fixed == SETTING_VARIABLES | set(settings_doc.COMPOSE_VARIABLES)
    assert fixed == set(settings_doc.COMPOSE_FIXED)
    # Uncommenting every line as it stands changes nothing the server would refuse.
    load_settings({k: v for k, v in assigned.items() if k in SETTING_VARIABLES})
    assert assigned["QRS_PUBLISH_ADDRESS"] == "127.0.0.1" and assigned["QRS_LOG_FORMAT"] == "json"


def test_env_example_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    target = tmp_path / "env"
    assert settings_doc.main(["--env-example", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == settings_doc.render_env_example(COMPOSE_TEXT)


def _mib(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([mg])", size).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "g" else 1)


def test_containers_have_memory_limits_that_hold_a_job() -> None:
    defaults = settings_doc.compose_defaults(COMPOSE_TEXT)
    job = int(defaults["QRS_JOB_MEMORY_LIMIT"])
    for name in ("worker", *GPU_SERVICES):
        assert SERVICES[name]["mem_limit"] == "${QRS_WORKER_MEMORY:-" + defaults["QRS_WORKER_MEMORY"] + "}"
    assert _mib(defaults["QRS_WORKER_MEMORY"]) >= job + WORKER_OVERHEAD_MB
    assert SERVICES["api"]["mem_limit"] == "${QRS_API_MEMORY:-" + defaults["QRS_API_MEMORY"] + "}"
    assert _mib(defaults["QRS_API_MEMORY"]) >= 512


def test_worker_warns_when_its_job_does_not_fit_its_container() -> None:
    assert container_memory_warning(4096, None) is None  # no cgroup limit
    assert container_memory_warning(4096, 5120) is None
    problem = container_memory_warning(4096, 4608)
    assert problem is not None and "QRS_WORKER_MEMORY" in problem and "4096 MiB" in problem
    assert container_memory_warning(0, 1024) is not None  # unset: half the machine, more than 0 MiB spare


def test_preloaded_backends_are_served() -> None:
    preload = settings_doc.compose_defaults(COMPOSE_TEXT)["QRS_PRELOAD_BACKENDS"].split(",")
    assert preload and all(name in default_catalog().names() for name in preload)
    # "${VAR-default}": an empty value in .env turns preloading off.
    assert "${QRS_PRELOAD_BACKENDS-" in COMPOSE_TEXT


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
