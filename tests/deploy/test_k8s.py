"""deploy/k8s/ passes strict Kubernetes schema validation (kubernetes-validate, which
bundles the schemas: nothing is downloaded) and agrees with itself and with the code:
kustomization.yaml lists every manifest, references resolve, one Deployment per lane."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.colony_config import LANES, ROOT, parse_colony_args, unknown_env, worker_lanes

K8S = ROOT / "deploy" / "k8s"
# Templates an operator copies and edits; deliberately not applied by kustomize.
TEMPLATES = {"secret.example.yaml"}
# The oldest version the manifests support (the tools lane's appArmorProfile field is
# 1.30+) and the newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in manifests() for doc in documents(path)]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in all_documents() if d["kind"] == kind}


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in all_documents():
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def colony_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """Containers that run the Colony image (`colony:<tag>`, rewritten by kustomize)."""
    for name, spec in pod_specs():
        for container in spec["containers"]:
            if container["image"].split(":")[0] == "colony":
                yield name, container


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        # strict: unknown fields are errors too (a misspelt key is not silently dropped).
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_misspelt_field() -> None:
    api = of_kind("Deployment")["colony-api"]
    api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in manifests()} - TEMPLATES
    images = {image["name"] for image in kustomization["images"]}
    assert {c["image"].split(":")[0] for _, c in colony_containers()} <= images


def test_colony_containers_run_real_commands() -> None:
    commands = set()
    for name, container in colony_containers():
        assert "command" not in container, f"{name} must keep the image's entrypoint"
        commands.add(parse_colony_args(container["args"])[0])
    assert commands == {"api", "migrate", "worker"}


def test_one_worker_deployment_per_lane() -> None:
    lanes = {}
    for name, container in colony_containers():
        served = worker_lanes(container["args"])
        if served is None:
            continue
        assert len(served) == 1, f"{name} serves {served}: one lane per Deployment"
        assert name == f"colony-worker-{served[0]}"
        lanes[served[0]] = name
    assert set(lanes) == LANES


def test_config_and_secret_hold_only_variables_colony_reads() -> None:
    config = of_kind("ConfigMap")["colony-config"]["data"]
    secret = documents(K8S / "secret.example.yaml")[0]["stringData"]
    # Keys that other containers (the Temporal setup Job) read from the same ConfigMap.
    read_by_others = {
        ref["valueFrom"]["configMapKeyRef"]["key"]
        for _, spec in pod_specs()
        for container in spec["containers"]
        for ref in container.get("env", ())
        if "configMapKeyRef" in ref.get("valueFrom", {})
    }
    assert unknown_env(config, also=read_by_others) == []
    assert unknown_env(secret) == []
    assert {"DATABASE_URL", "COLONY_PAYLOAD_KEYS"} <= set(secret)


def test_references_resolve() -> None:
    config_maps = set(of_kind("ConfigMap"))
    secrets = {documents(K8S / "secret.example.yaml")[0]["metadata"]["name"]}
    problems = []
    for name, spec in pod_specs():
        for container in spec["containers"]:
            for source in container.get("envFrom", ()):
                if "configMapRef" in source and source["configMapRef"]["name"] not in config_maps:
                    problems.append(f"{name}: no ConfigMap {source['configMapRef']['name']}")
                if "secretRef" in source and source["secretRef"]["name"] not in secrets:
                    problems.append(f"{name}: no Secret {source['secretRef']['name']}")
            mounted = {m["name"] for m in container.get("volumeMounts", ())}
            declared = {v["name"] for v in spec.get("volumes", ())}
            if mounted - declared:
                problems.append(f"{name}: undeclared volumes {sorted(mounted - declared)}")
    assert problems == []


def test_services_select_pods_and_hpas_target_deployments() -> None:
    deployments = of_kind("Deployment")
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in pod_labels), name
    scaled = set()
    for name, hpa in of_kind("HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, name
        scaled.add(target["name"])
    # A Deployment without `replicas` relies on its HPA (hpa.yaml); one with `replicas`
    # and an HPA would have its count reset by every `kubectl apply`.
    for name, deployment in deployments.items():
        assert ("replicas" in deployment["spec"]) == (name not in scaled), name
