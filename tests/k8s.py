"""Kubernetes checks without a cluster: Helm's own renderer, upstream CRD schemas, k8s schemas.

Custom kinds are validated against the `openAPIV3Schema` of their real CRD (vendored in
tests/schemas/crds), made as strict as the API server's strict field validation: an object
schema that lists its properties rejects any other field (the server would prune or reject
it), unless it says `x-kubernetes-preserve-unknown-fields`. Built-in kinds go through
kubernetes-validate in strict mode.
"""

from __future__ import annotations

import copy
import gzip
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.helpers import REPO

CHART = REPO / "charts" / "kws"
CRDS = REPO / "tests" / "schemas" / "crds"
KUBERNETES_VERSION = "1.32.0"
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 3x faster on 2 MB CRDs

Manifest = dict[str, Any]


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI v3 CRD schema in which unlisted object fields are errors."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """A validator per (apiVersion, kind) served by the vendored CRDs."""
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(CRDS.glob("*.yaml.gz")):
        crd = yaml.load(gzip.decompress(path.read_bytes()), Loader=SafeLoader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict(version["schema"]["openAPIV3Schema"])
                validator_class = jsonschema.validators.validator_for(
                    schema, jsonschema.Draft4Validator
                )
                validators[(f"{group}/{version['name']}", kind)] = validator_class(schema)
    return validators


def validate(manifest: Manifest) -> None:
    """Raise unless the object is valid: CRD schema for custom kinds, k8s schema otherwise."""
    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    validator = crd_validators().get(key)
    if validator is not None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
        if error is not None:
            raise error
        return
    group = key[0].rpartition("/")[0]
    if "." in group and not group.endswith(".k8s.io"):  # a custom kind without a vendored CRD
        raise LookupError(f"no schema for {key}: vendor its CRD in {CRDS}")
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def documents(text: str) -> list[Manifest]:
    """The non-empty YAML documents of a manifest stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def file_documents(path: Path) -> list[Manifest]:
    """The non-empty YAML documents of a file."""
    return documents(path.read_text())


def merge_values(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Values as Helm merges `-f a.yaml -f b.yaml`: maps deep-merged, later files win, lists
    replaced whole."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = merge_values(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged


def values_files(*paths: Path) -> dict[str, Any]:
    """The values of `-f` files merged in order."""
    return merge_values(*(yaml.safe_load(path.read_text()) or {} for path in paths))


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    """The objects of one kind, in render order."""
    return [m for m in manifests if m["kind"] == kind]


def is_hook(manifest: Manifest) -> bool:
    """Helm hooks (the `helm test` pod) are not part of the upgraded release manifest."""
    return "helm.sh/hook" in manifest["metadata"].get("annotations", {})


def flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) pairs; lists of named items are keyed by name, like a strategic merge."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten(item, f"{path}.{key}" if path else str(key))
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(item, Mapping) and "name" in item for item in value)
    ):
        for item in value:
            yield from flatten(item, f"{path}[{item['name']}]")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from flatten(item, f"{path}[{index}]")
    else:
        yield path, value


def changed_paths(before: Manifest, after: Manifest) -> set[str]:
    """Leaf paths whose value differs, appears or disappears between two objects."""
    old, new = dict(flatten(before)), dict(flatten(after))
    return {path for path in old.keys() | new.keys() if old.get(path, ...) != new.get(path, ...)}


# PodSpec fields of a KServe predictor (ComponentExtensionSpec and PodSpec share its level).
_POD_FIELDS = (
    "containers",
    "volumes",
    "securityContext",
    "serviceAccountName",
    "automountServiceAccountToken",
    "terminationGracePeriodSeconds",
    "imagePullSecrets",
    "nodeSelector",
    "tolerations",
    "affinity",
)


def kserve_deployment(service: Manifest) -> Manifest:
    """The Deployment KServe's Standard mode makes of an InferenceService's predictor, as far as
    the pod is concerned (name, labels, strategy, pod spec): for the checks that only know
    built-in kinds. An approximation: KServe adds its own labels and defaults."""
    meta, predictor = service["metadata"], service["spec"]["predictor"]
    name = f"{meta['name']}-predictor"
    labels = {
        **meta.get("labels", {}),
        "app": f"isvc.{name}",
        "serving.kserve.io/inferenceservice": meta["name"],
        "component": "predictor",
    }
    annotations = {**meta.get("annotations", {}), **predictor.get("annotations", {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels},
        "spec": {
            "replicas": predictor.get("minReplicas", 1),
            "selector": {"matchLabels": {"app": f"isvc.{name}"}},
            "strategy": predictor["deploymentStrategy"],
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {k: predictor[k] for k in _POD_FIELDS if k in predictor},
            },
        },
    }
