"""Pipeline run configs, the kind stack files and their manifests, checked without a cluster.

The cluster cannot run on build hosts: its manifests are checked against the Kubernetes
schemas (kubernetes-validate), the ZenML settings against ZenML's own models, and the
ports, names and locks against each other.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kws.errors import ParamsError
from kws_pipelines.config import CONFIGS, config_path, resolve_config
from tests.helpers import REPO

STACK_MANIFESTS = REPO / "manifests" / "stack"
KIND = REPO / "pipelines" / "stacks" / "kind"
KUBERNETES_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_run_configs_select_the_baseline_the_variant_and_the_smoke_params() -> None:
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == ["baseline", "smoke", "variant"]
    params_file = REPO / "params.yaml"
    _, baseline = resolve_config("baseline", params_file)
    _, variant = resolve_config("variant", params_file)
    _, smoke = resolve_config("smoke", params_file, ["train.batch_size=8"])
    assert baseline.model.architecture == "cnn" and not baseline.augment.enabled
    assert variant == resolve_config(CONFIGS / "variant.yaml", params_file)[1]
    assert variant.model.architecture == "speech_embedding" and variant.augment.enabled
    assert smoke.train.epochs == 1 and smoke.data.max_per_class > 0
    assert smoke.data.synthetic_voices == 0 and smoke.train.batch_size == 8
    for name in ("baseline", "variant", "smoke"):
        config = yaml.safe_load(config_path(name).read_text())
        assert config["run_name"].startswith(f"kws-{name}-") and config["enable_cache"] is False


def test_unknown_run_config_is_a_params_error() -> None:
    with pytest.raises(ParamsError, match="unknown pipeline config 'nope'"):
        config_path("nope")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_stack_manifests_match_the_kubernetes_schemas(version: str) -> None:
    files = [*STACK_MANIFESTS.glob("*.yaml"), REPO / "manifests/kind/local-registry-hosting.yaml"]
    checked = 0
    for path in files:
        if path.name == "kustomization.yaml":
            continue
        for doc in documents(path):
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked >= 15


def test_kustomization_lists_every_stack_manifest() -> None:
    (kustomization,) = documents(STACK_MANIFESTS / "kustomization.yaml")
    on_disk = {p.name for p in STACK_MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)


def test_ports_names_and_secrets_agree_across_kind_files() -> None:
    (cluster,) = documents(REPO / "manifests/kind/cluster.yaml")
    assert (cluster["kind"], cluster["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    published = {m["containerPort"] for m in cluster["nodes"][0]["extraPortMappings"]}
    services = [
        doc
        for p in STACK_MANIFESTS.glob("*.yaml")
        for doc in documents(p)
        if doc["kind"] == "Service"
    ]
    node_ports = {port["nodePort"] for svc in services for port in svc["spec"]["ports"]}
    gateway = 30080  # Envoy Gateway's NodePort (manifests/platform/gateway.yaml, test_chart.py)
    assert published - {gateway} == node_ports == {30237, 30500, 30900, 30901}

    setup = (KIND / "setup.sh").read_text() + (REPO / "manifests/kind/up.sh").read_text()
    stack = (KIND / "stack.yaml").read_text()
    assert "http://${NODE_IP}:30900" in stack and "http://${NODE_IP}:30500" in stack
    assert "http://$NODE_IP:30237" in setup
    assert f"kind-{cluster['name']}" in stack and f"CLUSTER={cluster['name']}" in setup
    for secret in ("minio-credentials", "zenml-credentials"):  # made by setup.sh, used by pods
        assert f"create secret generic {secret}" in setup
    referenced = set(
        re.findall(
            r"name: (\S+-credentials)",
            "".join(p.read_text() for p in STACK_MANIFESTS.glob("*.yaml")),
        )
    )
    assert referenced == {"minio-credentials", "zenml-credentials"}
    workspace = yaml.safe_load((KIND / "settings.yaml").read_text())["settings"]
    claim = workspace["orchestrator.kubernetes"]["pod_settings"]["volumes"][0]
    assert claim["persistentVolumeClaim"]["claimName"] == "kws-workspace"
    assert "name: kws-workspace" in (STACK_MANIFESTS / "workspace.yaml").read_text()


def test_kind_settings_are_valid_zenml_settings(tmp_path: Path) -> None:
    """ZenML's own models accept the settings `kws pipeline run` adds on the kind stack."""
    script = (
        "from zenml.config import DockerSettings\n"
        "from zenml.integrations.kubernetes.flavors import KubernetesOrchestratorSettings\n"
        "from kws_pipelines.config import kubernetes_settings\n"
        "s = kubernetes_settings()\n"
        "d = DockerSettings.model_validate(s['docker'])\n"
        "k = KubernetesOrchestratorSettings.model_validate(s['orchestrator.kubernetes'])\n"
        "print(d.dockerfile, d.build_context_root, len(k.pod_settings.volume_mounts))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_CONFIG_PATH": str(tmp_path / "zenml"),
            "PATH": "/usr/bin:/bin",
        },
        check=True,
    )
    dockerfile, context, mounts = proc.stdout.split()[-3:]
    assert Path(dockerfile).is_file() and Path(context) == REPO and int(mounts) == 4


def test_pipeline_image_lock_keeps_zenml_kubernetes_pin_and_no_kserve() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "requirements/lock-kind.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    pins = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}
    assert int(pins["kubernetes"].split(".")[0]) < 26
    assert pins["zenml"] == "0.98.0" and "kserve" not in pins and "tensorflow-cpu" in pins
    dockerfile = (REPO / "docker/pipeline/Dockerfile").read_text()
    assert "requirements/lock-kind.txt" in dockerfile and ".[train,pipeline,kind]" in dockerfile


def test_a_change_to_the_feature_extractor_reruns_featurize_and_everything_after() -> None:
    from dvc.repo import Repo

    repo = Repo(str(REPO))
    graph = repo.index.graph  # edges: stage -> the stages whose outputs it reads
    stages = {s.addressing: s for s in graph.nodes}
    reading = {
        name for name, s in stages.items() if any(d.def_path == "kws/features.py" for d in s.deps)
    }
    downstream = set(reading)
    changed = True
    while changed:
        changed = False
        for name, s in stages.items():
            if name not in downstream and any(
                p.addressing in downstream for p in graph.successors(s)
            ):
                downstream.add(name)
                changed = True
    assert "featurize" in reading
    assert downstream == {"featurize", "train", "evaluate", "export"}
