"""The Helm chart charts/kws, rendered and linted by Helm's own engine (helm-python-sdk).

No cluster runs here: every rendered object is checked against the schema a cluster would
enforce (the upstream CRDs for InferenceService, HTTPRoute, ServiceMonitor; Kubernetes'
own schemas for built-in kinds), and every step of docs/runbooks/rollout.md is rendered
and diffed against the step before it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import helm_python
import jsonschema
import pytest
import yaml

from kws import deploy
from tests.helpers import REPO
from tests.k8s import (
    CHART,
    Manifest,
    by_kind,
    changed_paths,
    crd_validators,
    documents,
    is_hook,
    validate,
    values_files,
)

OVERLAYS = CHART / "ci"
ENVIRONMENT = REPO / "manifests" / "gitops" / "values-kind.yaml"
RELEASE, NAMESPACE = "kws", "kws"
# docs/runbooks/rollout.md: `helm upgrade -f values-kind.yaml -f <step>`, then `helm rollback`
RUNBOOK = [
    ("v1", "v1-only.yaml", {"v1": 100}),
    ("v2 dark", "v2-dark.yaml", {"v1": 100, "v2": 0}),
    ("canary 90/10", "canary-90-10.yaml", {"v1": 90, "v2": 10}),
    ("canary 50/50", "canary-50-50.yaml", {"v1": 50, "v2": 50}),
    ("v2", "v2-promoted.yaml", {"v1": 0, "v2": 100}),
    ("rollback", "canary-50-50.yaml", {"v1": 50, "v2": 50}),  # helm rollback: revision 4 again
]
# What a rollout step may change in an object the release already has: traffic weights,
# the model URI and the annotation that restarts the pods for it, and backends appearing.
ALLOWED_CHANGES = {
    "InferenceService": (
        r"^spec\.predictor\.containers\[kserve-container\]\.env\[KWS_MODEL_URI\]\.value$",
        r"^spec\.predictor\.annotations\.kws-mlops/model$",
    ),
    "HTTPRoute": (r"^spec\.rules\[0\]\.backendRefs\[[a-z0-9-]+\]\.(weight|name|port)$",),
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm_python.Chart, values: dict[str, Any]) -> list[Manifest]:
    """Every object of the release (hooks included), NOTES.txt left out."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in documents(text)
    ]


def route_weights(manifests: list[Manifest]) -> dict[str, int]:
    """Version name -> weight of the HTTPRoute's backendRefs."""
    (route,) = by_kind(manifests, "HTTPRoute")
    (rule,) = route["spec"]["rules"]
    return {
        ref["name"].removeprefix(f"{RELEASE}-").removesuffix("-predictor"): ref["weight"]
        for ref in rule["backendRefs"]
    }


def step_values(overlay: str) -> dict[str, Any]:
    return values_files(ENVIRONMENT, OVERLAYS / overlay)


def test_lint_strict_is_clean_for_the_defaults_and_every_overlay() -> None:
    for values in [None, *(yaml.safe_load(p.read_text()) for p in sorted(OVERLAYS.glob("*.yaml")))]:
        report = helm_python.lint(CHART, values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2]  # 1 is info
        assert report["errors"] == [] and problems == [], values


@pytest.mark.parametrize(
    ("overlay", "weights"),
    [
        ("v1-only.yaml", {"v1": 100}),
        ("canary-90-10.yaml", {"v1": 90, "v2": 10}),
        ("v2-only.yaml", {"v2": 100}),
    ],
)
def test_each_overlay_renders_one_standard_inferenceservice_per_version_and_the_split(
    chart: helm_python.Chart, overlay: str, weights: dict[str, int]
) -> None:
    manifests = render(chart, yaml.safe_load((OVERLAYS / overlay).read_text()))
    services = by_kind(manifests, "InferenceService")
    assert [s["metadata"]["name"] for s in services] == [f"kws-{name}" for name in weights]
    for service, name in zip(services, weights, strict=True):
        assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        assert service["metadata"]["labels"]["kws-mlops/version"] == name
    assert route_weights(manifests) == weights
    (route,) = by_kind(manifests, "HTTPRoute")
    paths = [m["path"] for m in route["spec"]["rules"][0]["matches"]]
    assert paths == [{"type": "PathPrefix", "value": p} for p in ("/predict", "/v1", "/v2")]
    assert {r["port"] for r in route["spec"]["rules"][0]["backendRefs"]} == {80}
    assert sorted(m["kind"] for m in manifests) == sorted(
        ["HTTPRoute", "NetworkPolicy", "Pod", "ServiceAccount"]
        + ["InferenceService"] * len(weights)
    )


def test_the_predictor_is_our_image_serving_the_model_with_http_probes_and_safe_rollouts(
    chart: helm_python.Chart,
) -> None:
    manifests = render(chart, yaml.safe_load((OVERLAYS / "canary-90-10.yaml").read_text()))
    v2 = by_kind(manifests, "InferenceService")[1]["spec"]["predictor"]
    (container,) = v2["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == "kws-predictor:0.1.0"
    assert container["command"] == ["kws"] and container["args"][:3] == [
        "serve",
        "--model",
        "$(KWS_MODEL_URI)",
    ]
    assert env["KWS_MODEL_URI"] == "models:/kws/2" and env["MLFLOW_TRACKING_URI"]
    assert container["args"][-2:] == ["--workers", "1"]  # one per core of limits.cpu "1"
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert v2["deploymentStrategy"]["rollingUpdate"]["maxUnavailable"] == 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"] and v2["securityContext"]["runAsNonRoot"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert v2["annotations"] | {"kws-mlops/model": ""} == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
        "kws-mlops/model": "",
    }


def test_credentials_come_from_secret_references_and_pvc_models_are_mounted(
    chart: helm_python.Chart,
) -> None:
    values = {
        "versions": [{"name": "v3", "model": "pvc://models/kws/v3", "weight": 100}],
        "mlflow": {"credentialsSecret": "mlflow-auth"},
        "s3": {"endpoint": "http://minio.kws.svc:9000", "credentialsSecret": "minio-credentials"},
    }
    (service,) = by_kind(render(chart, values), "InferenceService")
    pod = service["spec"]["predictor"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-auth",
        "key": "password",
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "minio-credentials"
    assert env["KWS_MODEL_URI"]["value"] == "/mnt/models/kws/v3"
    assert {
        "name": "models",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    } in pod["volumes"]


def test_knative_switch_renders_one_inferenceservice_with_canary_traffic(
    chart: helm_python.Chart,
) -> None:
    values = yaml.safe_load((OVERLAYS / "canary-90-10.yaml").read_text())
    manifests = render(chart, {**values, "knative": {"enabled": True}})
    (service,) = by_kind(manifests, "InferenceService")
    predictor = service["spec"]["predictor"]
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["containers"][0]["env"][0] == {
        "name": "KWS_MODEL_URI",
        "value": "models:/kws/2",
    }
    assert "deploymentStrategy" not in predictor and "lifecycle" not in predictor["containers"][0]
    assert by_kind(manifests, "HTTPRoute") == []  # Knative routes itself
    with pytest.raises(helm_python.HelmRenderError, match="at most 2 versions"):
        three = [*values["versions"], {"name": "v3", "model": "models:/kws/3", "weight": 0}]
        render(chart, {"versions": three, "knative": {"enabled": True}})


def full_feature_values() -> list[dict[str, Any]]:
    """Values that switch every template on, in both modes."""
    base = step_values("canary-90-10.yaml")
    on = {
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        },
        "route": {"hostnames": ["kws.example.com"]},
        "test": {"url": "http://kws-gateway.kws.svc"},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
        "mlflow": {"credentialsSecret": "mlflow-auth"},
        "podAnnotations": {"kws-mlops/restarted-at": "2025-01-01T00:00:00Z"},
    }
    return [{**base, **on}, {**base, **on, "knative": {"enabled": True}}]


def all_renders(chart: helm_python.Chart) -> Iterator[tuple[str, list[Manifest]]]:
    for overlay in sorted(OVERLAYS.glob("*.yaml")):
        yield overlay.name, render(chart, yaml.safe_load(overlay.read_text()))
    yield "environment", render(chart, values_files(ENVIRONMENT))
    for index, values in enumerate(full_feature_values()):
        yield f"full-{index}", render(chart, values)


def test_every_rendered_object_validates_against_its_crd_or_the_kubernetes_schema(
    chart: helm_python.Chart,
) -> None:
    kinds: set[str] = set()
    for _, manifests in all_renders(chart):
        for manifest in manifests:
            validate(manifest)
            kinds.add(manifest["kind"])
    assert kinds == {
        "InferenceService",
        "HTTPRoute",
        "ServiceMonitor",
        "PrometheusRule",
        "ServiceAccount",
        "Pod",
        "NetworkPolicy",
    }


def test_a_network_policy_selects_every_pod_of_every_render(chart: helm_python.Chart) -> None:
    """checkov's NetworkPolicy check pairs policies and pods across files by labels only."""
    for name, manifests in all_renders(chart):
        (policy,) = by_kind(manifests, "NetworkPolicy")
        selector = policy["spec"]["podSelector"]["matchLabels"].items()
        pods = by_kind(manifests, "Pod") + by_kind(manifests, "InferenceService")
        assert pods and all(selector <= pod["metadata"]["labels"].items() for pod in pods), name
        (rule,) = policy["spec"]["ingress"]
        sources = [s["namespaceSelector"]["matchLabels"] for s in rule["from"][1:]]
        namespaces = [s["kubernetes.io/metadata.name"] for s in sources]
        knative = (
            by_kind(manifests, "InferenceService")[0]["metadata"]["annotations"][
                "serving.kserve.io/deploymentMode"
            ]
            == "Knative"
        )
        if knative:
            assert namespaces == ["envoy-gateway-system", "knative-serving"] and "ports" not in rule
        else:
            assert namespaces == ["envoy-gateway-system"]
            assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]


def test_the_crd_validator_rejects_broken_objects(chart: helm_python.Chart) -> None:
    manifests = render(chart, step_values("canary-90-10.yaml"))
    service, route = by_kind(manifests, "InferenceService")[0], by_kind(manifests, "HTTPRoute")[0]
    broken_service = yaml.safe_load(yaml.safe_dump(service))
    broken_service["spec"]["predictor"]["deploymentStrategy"]["rollingUpdate"]["maxUnavalable"] = 0
    with pytest.raises(jsonschema.ValidationError, match="maxUnavalable"):
        validate(broken_service)
    broken_route = yaml.safe_load(yaml.safe_dump(route))
    broken_route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    with pytest.raises(jsonschema.ValidationError, match="-1 is less than the minimum of 0"):
        validate(broken_route)
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"endpoints": [{"port": "http1"}]},  # no selector: required
    }
    with pytest.raises(jsonschema.ValidationError, match="'selector' is a required property"):
        validate(monitor)
    assert ("serving.kserve.io/v1beta1", "InferenceService") in crd_validators()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            lambda v: v["versions"][1].update(weight=120),
            helm_python.HelmValuesError,
            r"/versions/1/weight.*maximum: got 120, want 100",
        ),
        (
            lambda v: v.update(replicas=2),
            helm_python.HelmValuesError,
            r"additional properties 'replicas' not allowed",
        ),
        (
            lambda v: v["versions"][0].update(wieght=90),
            helm_python.HelmValuesError,
            r"/versions/0.*additional properties 'wieght' not allowed",
        ),
        (
            lambda v: v["versions"][0].update(weight=80),
            helm_python.HelmRenderError,
            r"versions: weights sum to 90, not 100",
        ),
        (
            lambda v: v["versions"][1].update(name="v1"),
            helm_python.HelmRenderError,
            r'versions: name "v1" appears more than once',
        ),
        (
            lambda v: v["versions"][1].update(name="V2"),
            helm_python.HelmValuesError,
            r"/versions/1/name",
        ),
        (
            lambda v: v.update(server={"workers": 3}, resources={"limits": {"cpu": "2"}}),
            helm_python.HelmRenderError,
            r"server.workers: 3 workers on a CPU limit of 2: one worker per core at most",
        ),
        (
            lambda v: v.update(server={"workers": 2}, resources={"limits": {"cpu": "900m"}}),
            helm_python.HelmRenderError,
            r"server.workers: 2 workers on a CPU limit of 900m",
        ),
    ],
)
def test_bad_values_are_rejected_with_helms_error(
    chart: helm_python.Chart, change: Any, error: type[Exception], message: str
) -> None:
    values = step_values("canary-90-10.yaml")
    change(values)
    with pytest.raises(error, match=re.compile(message, re.S)):
        render(chart, values)
    if error is helm_python.HelmValuesError:  # helm lint runs templates in lint mode: `fail`
        report = helm_python.lint(CHART, values, strict=True)  # is logged there, not raised
        assert re.search(message, "\n".join(report["errors"]), re.S)


def test_workers_fill_the_cpu_limit_and_no_more(chart: helm_python.Chart) -> None:
    values = step_values("canary-90-10.yaml")
    values.update(
        server={"workers": 2}, resources={"limits": {"cpu": "2"}, "requests": {"cpu": "2"}}
    )
    for service in by_kind(render(chart, values), "InferenceService"):
        (container,) = service["spec"]["predictor"]["containers"]
        assert container["args"][-2:] == ["--workers", "2"]
        assert container["resources"]["limits"]["cpu"] == "2"


def test_kws_deploy_rejects_the_same_bad_values() -> None:
    for weight, pattern in [(120, "integer from 0 to 100"), (80, "weights sum to 90")]:
        values = step_values("canary-90-10.yaml")
        values["versions"][0]["weight"] = weight
        with pytest.raises(deploy.DeployError, match=pattern):
            deploy.parse_versions(values)


@pytest.mark.parametrize("step", range(len(RUNBOOK)), ids=[s[0] for s in RUNBOOK])
def test_every_runbook_step_renders_valid_objects_with_its_weights(
    chart: helm_python.Chart, step: int
) -> None:
    _, overlay, weights = RUNBOOK[step]
    manifests = render(chart, step_values(overlay))
    assert route_weights(manifests) == weights
    services = {s["metadata"]["name"]: s for s in by_kind(manifests, "InferenceService")}
    assert sorted(services) == [f"kws-{name}" for name in sorted(weights)]
    for manifest in manifests:
        validate(manifest)


def unexpected_changes(before: list[Manifest], after: list[Manifest]) -> dict[str, list[str]]:
    """Objects of `before` that vanish or change outside ALLOWED_CHANGES in `after` (hooks,
    re-created by every `helm test`, left out)."""
    old = {(m["kind"], m["metadata"]["name"]): m for m in before if not is_hook(m)}
    new = {(m["kind"], m["metadata"]["name"]): m for m in after if not is_hook(m)}
    found: dict[str, list[str]] = {}
    for key, manifest in old.items():
        if key not in new:
            found[f"{key[0]}/{key[1]}"] = ["<deleted>"]
            continue
        allowed = ALLOWED_CHANGES.get(key[0], ())
        paths = sorted(
            path
            for path in changed_paths(manifest, new[key])
            if not any(re.match(pattern, path) for pattern in allowed)
        )
        if paths:
            found[f"{key[0]}/{key[1]}"] = paths
    return found


def test_between_runbook_steps_only_weights_and_model_uris_change(
    chart: helm_python.Chart,
) -> None:
    """So `helm upgrade` and `helm rollback` never need a delete and recreate."""
    renders = [render(chart, step_values(overlay)) for _, overlay, _ in RUNBOOK]
    for (name, _, _), before, after in zip(RUNBOOK[1:], renders[:-1], renders[1:], strict=True):
        assert unexpected_changes(before, after) == {}, name
    modes = {
        m["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        for r in renders
        for m in by_kind(r, "InferenceService")
    }
    assert modes == {"Standard"}
    assert [route_weights(r) for r in renders] == [w for _, _, w in RUNBOOK]


def test_a_new_model_uri_changes_only_that_versions_model_fields(chart: helm_python.Chart) -> None:
    after = step_values("canary-50-50.yaml")
    after["versions"][1]["model"] = "models:/kws@challenger"
    old, new = render(chart, step_values("canary-50-50.yaml")), render(chart, after)
    changed = {
        (o["metadata"]["name"], path)
        for o, n in zip(old, new, strict=True)
        if not is_hook(o)
        for path in changed_paths(o, n)
    }
    assert changed == {
        ("kws-v2", "spec.predictor.containers[kserve-container].env[KWS_MODEL_URI].value"),
        ("kws-v2", "spec.predictor.annotations.kws-mlops/model"),
    }
    assert unexpected_changes(old, new) == {}


def test_the_diff_check_flags_other_changes_and_deletions(chart: helm_python.Chart) -> None:
    before = render(chart, step_values("canary-90-10.yaml"))
    other_user = render(
        chart,
        {
            **step_values("canary-90-10.yaml"),
            "securityContext": {"runAsUser": 10002, "runAsGroup": 10001},
        },
    )
    assert unexpected_changes(before, other_user) == {
        f"InferenceService/kws-{name}": ["spec.predictor.securityContext.runAsUser"]
        for name in ("v1", "v2")
    }
    mode_changed = yaml.safe_load(yaml.safe_dump(before))
    v1 = by_kind(mode_changed, "InferenceService")[0]
    v1["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"
    assert unexpected_changes(before, mode_changed) == {
        "InferenceService/kws-v1": ["metadata.annotations.serving.kserve.io/deploymentMode"]
    }
    retired = render(chart, step_values("v2-only.yaml"))
    assert unexpected_changes(before, retired) == {"InferenceService/kws-v1": ["<deleted>"]}


def test_compose_gateway_weights_equal_the_httproute_weights_of_the_same_values(
    chart: helm_python.Chart,
) -> None:
    files = [ENVIRONMENT, *sorted(OVERLAYS.glob("*.yaml"))]
    for path in files:
        values = deploy.load_values(path)
        helm_weights = route_weights(render(chart, values))
        gateway = deploy.gateway_weights(deploy.render_compose_gateway(values))
        assert {name: gateway.get(name, 0) for name in helm_weights} == helm_weights, path
        assert deploy.route_weights(values) == helm_weights
        assert sum(gateway.values()) == 100 and 0 not in gateway.values()


def test_kws_deploy_render_helm_is_the_same_render(chart: helm_python.Chart) -> None:
    values = deploy.load_values(ENVIRONMENT)
    text = deploy.render_helm(values, CHART, RELEASE, NAMESPACE)
    assert documents(text) == render(chart, values)
    with pytest.raises(deploy.DeployError, match="not a DNS-1123 label"):
        deploy.render_helm({"versions": [{"name": "V1", "model": "x", "weight": 100}]}, CHART)


def test_chart_keys_of_kws_deploy_match_the_values_schema(chart: helm_python.Chart) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert chart.schema == schema and schema["additionalProperties"] is False
    assert tuple(schema["properties"]) == deploy.CHART_KEYS
    assert set(chart.values) == set(deploy.CHART_KEYS)
    version = schema["properties"]["versions"]["items"]
    assert tuple(version["properties"]) == deploy.VERSION_KEYS
    assert version["properties"]["name"]["pattern"] == deploy.NAME_PATTERN
    assert version["properties"]["weight"] | {"description": ""} == {
        "type": "integer",
        "minimum": 0,
        "maximum": 100,
        "description": "",
    }


def test_notes_give_the_commands_to_call_the_service(chart: helm_python.Chart) -> None:
    rendered = chart.render(step_values("canary-90-10.yaml"), name=RELEASE, namespace=NAMESPACE)
    notes = rendered["kws/templates/NOTES.txt"]
    assert "v2: models:/kws/2  weight 10" in notes
    assert (
        "curl -H 'Content-Type: audio/wav' --data-binary @digit.wav http://localhost:8000/predict"
        in notes
    )
    assert "port-forward svc/kws-v1-predictor 8080:80" in notes
    assert "helm test kws -n kws" in notes and "helm rollback kws -n kws" in notes


def test_helm_test_pod_posts_to_every_version_and_the_gateway(chart: helm_python.Chart) -> None:
    values = {**step_values("canary-90-10.yaml"), "test": {"url": "http://gw.kws.svc/"}}
    (pod,) = by_kind(render(chart, values), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"][:2] == ["python3", "-c"]
    assert container["command"][2] == (CHART / "files" / "predict_test.py").read_text()
    assert container["args"] == [
        "http://kws-v1-predictor.kws.svc.cluster.local/predict",
        "http://kws-v2-predictor.kws.svc.cluster.local/predict",
        "http://gw.kws.svc/predict",
    ]


def test_argo_cd_application_and_gateway_manifests_validate() -> None:
    manifests = [
        *documents((REPO / "manifests/gitops/application.yaml").read_text()),
        *documents((REPO / "manifests/platform/gateway.yaml").read_text()),
    ]
    checked = []
    for manifest in manifests:
        if manifest["kind"] == "EnvoyProxy":  # Envoy Gateway's CRD is not vendored
            continue
        validate(manifest)
        checked.append(manifest["kind"])
    assert checked == ["Application", "GatewayClass", "Gateway"]
    (application,) = documents((REPO / "manifests/gitops/application.yaml").read_text())
    source = application["spec"]["source"]
    assert source["path"] == "charts/kws"
    (values_file,) = source["helm"]["valueFiles"]
    assert (REPO / source["path"] / values_file).resolve() == ENVIRONMENT
    assert source["helm"]["parameters"] == [{"name": "test.enabled", "value": "false"}]
    broken = yaml.safe_load(yaml.safe_dump(application))
    broken["spec"]["source"]["helm"]["valuesFiles"] = broken["spec"]["source"]["helm"].pop(
        "valueFiles"
    )
    with pytest.raises(jsonschema.ValidationError, match="valuesFiles"):
        validate(broken)


def test_the_route_attaches_to_the_gateway_published_by_kind(chart: helm_python.Chart) -> None:
    (route,) = by_kind(render(chart, values_files(ENVIRONMENT)), "HTTPRoute")
    gateway_docs = documents((REPO / "manifests/platform/gateway.yaml").read_text())
    (gateway,) = by_kind(gateway_docs, "Gateway")
    (parent,) = route["spec"]["parentRefs"]
    assert (parent["name"], parent["namespace"]) == (
        gateway["metadata"]["name"],
        gateway["metadata"]["namespace"],
    )
    assert parent["sectionName"] in {listener["name"] for listener in gateway["spec"]["listeners"]}
    (proxy,) = by_kind(gateway_docs, "EnvoyProxy")
    node_port = proxy["spec"]["provider"]["kubernetes"]["envoyService"]["patch"]["value"]["spec"][
        "ports"
    ][0]["nodePort"]
    (cluster,) = documents((REPO / "manifests/kind/cluster.yaml").read_text())
    published = {
        m["containerPort"]: m["hostPort"] for m in cluster["nodes"][0]["extraPortMappings"]
    }
    assert published[node_port] == 8000


def test_checkov_skips_each_have_a_written_reason() -> None:
    lines = (REPO / ".checkov.yaml").read_text().splitlines()
    skips = [line for line in lines if re.match(r"^\s+- CKV", line)]
    assert skips, "no skipped checks listed"
    for line in skips:
        assert re.match(r"^\s+- CKV\w+\s+# \S.{15,}", line), line


def overlay_names() -> list[str]:
    return sorted(p.name for p in OVERLAYS.glob("*.yaml"))


def test_runbook_uses_the_overlays_the_tests_render() -> None:
    runbook = (REPO / "docs/runbooks/rollout.md").read_text()
    for _, overlay, _ in RUNBOOK:
        assert f"charts/kws/ci/{overlay}" in runbook
    assert set(overlay_names()) >= {"v1-only.yaml", "canary-90-10.yaml", "v2-only.yaml"}
    assert "helm rollback kws" in runbook and "git revert" in runbook


class _Predictor(BaseHTTPRequestHandler):
    """/ok answers a prediction, /empty a 2xx without label, anything else a 500."""

    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.headers["Content-Type"], body))
        status, answer = {
            "/ok/predict": (200, b'{"label": "three", "confidence": 0.9}'),
            "/empty/predict": (200, b"{}"),
        }.get(self.path, (500, b'{"error": "boom"}'))
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def predictor_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Predictor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run_test_pod_script(*urls: str) -> subprocess.CompletedProcess[str]:
    """The helm test pod's command, run here against local servers."""
    script = (CHART / "files" / "predict_test.py").read_text()
    return subprocess.run(
        [sys.executable, "-c", script, *urls],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TIMEOUT_SECONDS": "5", "PATH": "/usr/bin:/bin"},
    )


def test_helm_test_script_passes_on_predictions_and_fails_on_anything_else(
    predictor_url: str,
) -> None:
    ok = run_test_pod_script(f"{predictor_url}/ok/predict")
    assert ok.returncode == 0 and "ok   200" in ok.stdout and "label 'three'" in ok.stdout
    content_type, wav = _Predictor.bodies[-1]
    assert content_type == "audio/wav" and wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert len(wav) == 44 + 2 * 16000  # 1 s of 16-bit mono at 16 kHz
    for bad in ("fail", "empty"):
        result = run_test_pod_script(
            f"{predictor_url}/ok/predict", f"{predictor_url}/{bad}/predict"
        )
        assert result.returncode == 1 and "FAIL" in result.stdout, result.stdout
    assert run_test_pod_script().returncode == 1  # nothing checked is a failure


def test_the_prometheus_rule_carries_the_rules_file_the_compose_prometheus_loads(
    chart: helm_python.Chart,
) -> None:
    rules_file = CHART / "files" / "prometheus" / "kws-rules.yaml"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./charts/kws/files/prometheus:/etc/prometheus/rules:ro" in mounts
    config = yaml.safe_load((REPO / "docker/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    values = full_feature_values()[0]
    (rule,) = by_kind(render(chart, values), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(rules_file.read_text())
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    validate(rule)
    off = by_kind(render(chart, step_values("canary-90-10.yaml")), "PrometheusRule")
    assert off == []  # opt-in: needs the Prometheus Operator
