"""The deployment files, checked offline: Kubernetes manifests against the API schemas
(kubernetes-validate), safe defaults in each of them, the compose file, the image's pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hareway.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
KUBERNETES_VERSION = "1.30.0"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        found += documents(K8S / name)
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in resources() if doc["kind"] == kind]


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    checked = 0
    for doc in resources():
        if doc["apiVersion"].startswith("rabbitmq.com/"):
            # The Cluster Operator's CRD: no schema ships with kubernetes-validate.
            assert doc["kind"] == "RabbitmqCluster"
            assert doc["spec"]["replicas"] == 3
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 5


def test_kustomization_generates_the_topology_the_cluster_uses() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (K8S / name).exists(), name
    [generator] = kustomization["configMapGenerator"]
    assert generator["name"] == "hareway-topology"
    topology = load_topology(str(K8S / generator["files"][0]))
    assert topology.queues
    # A 3-node cluster replicates quorum queues; a classic one lives on one node.
    assert {queue.type for queue in topology.queues} == {"quorum"}


@pytest.mark.parametrize("name", ["hareway-gateway", "hareway-consumers"])
def test_each_deployment_is_safe_by_default(name: str) -> None:
    [deployment] = [doc for doc in of_kind("Deployment") if doc["metadata"]["name"] == name]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["topologySpreadConstraints"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    for container in spec["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert "memory" in container["resources"]["limits"]
        port = container["ports"][0]["name"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert str(pod["metadata"]["annotations"]["prometheus.io/port"]) == str(
            container["ports"][0]["containerPort"]
        )
    labels = deployment["spec"]["selector"]["matchLabels"]
    budgets = [
        pdb
        for pdb in of_kind("PodDisruptionBudget")
        if pdb["spec"]["selector"]["matchLabels"] == labels
    ]
    assert budgets, f"no PodDisruptionBudget for {name}"


def test_the_gateway_is_never_deployed_without_api_keys() -> None:
    [gateway] = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "hareway-gateway"]
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    [api_keys] = [env for env in container["env"] if env["name"] == "API_KEYS"]
    reference = api_keys["valueFrom"]["secretKeyRef"]
    assert reference.get("optional", False) is False  # no Secret, no pod: never open


def test_the_compose_file_parses_and_matches() -> None:
    compose = yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"rabbitmq", "postgres", "gateway", "consumers"} <= services.keys()
    for name in ("gateway", "consumers"):
        service = services[name]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["build"]["dockerfile"] == "infra/Dockerfile"
    assert "--health-port" in services["consumers"]["command"]
    assert services["consumers"]["healthcheck"]["test"]
    for volume in services["gateway"]["volumes"]:
        source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / "infra" / source).exists(), source


def test_the_image_is_pinned_base_and_dependencies() -> None:
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    [image] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11[\w.-]*@sha256:[0-9a-f]{64}", image), image
    assert all(
        line == "FROM ${PYTHON_IMAGE}" or line.startswith("FROM ${PYTHON_IMAGE} ")
        for line in dockerfile.splitlines()
        if line.startswith("FROM ")
    )
    assert "--require-hashes" in dockerfile
    lock = (ROOT / "infra" / "requirements.lock").read_text()
    pinned = {_normal(match) for match in re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.MULTILINE)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = _normal(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
        assert name in pinned, f"{name} is not in infra/requirements.lock: run make lock"
    for block in lock.split("\n\n"):
        for line in block.splitlines():
            if "==" in line and not line.startswith(" "):
                assert "--hash=sha256:" in block


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
