"""Deploy values: which model versions run and their traffic weights, for Helm and Compose.

One values file (`versions: [{name, model, weight, image?}]` plus the chart's other keys)
drives both targets: the Helm chart `charts/kws` reads it directly, and this module renders
the Compose gateway (nginx weighted upstream) from it. Every change (new weights, a
promotion, a rollback) is recorded as a numbered revision in a state folder, like
`helm history`.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kws.errors import KwsError

VERSION_KEYS = ("name", "model", "weight", "image")
REQUIRED_VERSION_KEYS = ("name", "model", "weight")
# Top-level keys of charts/kws/values.yaml (a test keeps them equal to values.schema.json):
# the same file is a Helm values file, so they are all allowed; this module owns `versions`.
CHART_KEYS = (
    "versions",
    "image",
    "autoscaling",
    "resources",
    "probes",
    "shutdown",
    "rollout",
    "server",
    "securityContext",
    "serviceAccount",
    "podAnnotations",
    "mlflow",
    "s3",
    "monitoring",
    "networkPolicy",
    "route",
    "knative",
    "test",
)
# A version name becomes part of Kubernetes names (`<release>-<name>-predictor`) and of the
# Compose service `predictor-<name>`: a DNS-1123 label, short enough for both.
NAME_MAX = 20
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,18}[a-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)
_REGISTRY_URI = re.compile(r"^models:/[^/@]+(@[\w-]+|/\d+)$")
# what `kws serve` reads (pvc:// is mounted by the chart and served as a path)
_STORAGE_SCHEMES = (
    "s3://",
    "gs://",
    "pvc://",
    "file://",
    "runs:/",
    "mlflow-artifacts:/",
    "http://",
    "https://",
)
_ANY_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
DEFAULT_PATHS = ("/predict", "/v1", "/v2")
GATEWAY_UPSTREAM = "kws_predictors"
GATEWAY_PORT = 8000
PREDICTOR_PORT = 8080
_GATEWAY_SERVER = re.compile(r"^\s*server\s+predictor-([a-z0-9-]+):\d+\s+weight=(\d+)[\s;]", re.M)


class DeployError(KwsError):
    """Deploy values are invalid, or a deploy revision cannot be found or written."""


@dataclass(frozen=True)
class Version:
    """One deployed model version: its name, model URI, traffic weight and optional image."""

    name: str
    model: str
    weight: int
    image: str | None = None


def check_model_uri(uri: str) -> None:
    """Raise DeployError unless `uri` is a registry URI or a storage URI the predictor reads."""
    if _REGISTRY_URI.match(uri):
        return
    if uri.startswith("models:/"):
        raise DeployError(
            f"model {uri!r}: registry URIs look like models:/kws/2 or models:/kws@champion"
        )
    if uri.startswith(_STORAGE_SCHEMES):
        if uri.startswith(("s3://", "gs://", "pvc://")) and not re.match(r"^\w+://[^/]+/.+", uri):
            raise DeployError(f"model {uri!r}: a storage URI needs a bucket (or claim) and a path")
        return
    if not uri or _ANY_SCHEME.match(uri):
        raise DeployError(
            f"model {uri!r}: expected models:/NAME/VERSION, models:/NAME@ALIAS, s3://, gs://, "
            "pvc:// or a path"
        )


def parse_versions(values: Mapping[str, Any]) -> list[Version]:
    """Validate deploy values and return their versions; the first problem is a DeployError."""
    if not isinstance(values, Mapping):
        raise DeployError("deploy values: expected a mapping with a `versions` list")
    unknown = sorted(set(values) - set(CHART_KEYS))
    if unknown:
        raise DeployError(
            f"deploy values: unknown key {unknown[0]!r} (known: {', '.join(CHART_KEYS)})"
        )
    entries = values.get("versions")
    if not isinstance(entries, list) or not entries:
        raise DeployError("deploy values: `versions` must be a non-empty list")
    versions = [_parse_version(i, entry) for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for version in versions:
        if version.name in seen:
            raise DeployError(f"versions: name {version.name!r} appears more than once")
        seen.add(version.name)
    total = sum(v.weight for v in versions)
    if total != 100:
        split = ", ".join(f"{v.name}={v.weight}" for v in versions)
        raise DeployError(f"versions: weights sum to {total}, not 100 ({split})")
    return versions


def _parse_version(index: int, entry: object) -> Version:
    where = f"versions[{index}]"
    if not isinstance(entry, Mapping):
        raise DeployError(f"{where}: expected a mapping with name, model and weight")
    if isinstance(entry.get("name"), str):
        where += f" ({entry['name']})"
    unknown = sorted(set(entry) - set(VERSION_KEYS))
    if unknown:
        raise DeployError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(VERSION_KEYS)})")
    missing = [key for key in REQUIRED_VERSION_KEYS if key not in entry]
    if missing:
        raise DeployError(f"{where}: missing {missing[0]!r}")
    name, model, weight, image = (entry.get(key) for key in VERSION_KEYS)
    if not isinstance(name, str) or not _NAME.match(name):
        raise DeployError(
            f"{where}: name {name!r} is not a DNS-1123 label of at most {NAME_MAX} characters "
            "(lowercase letters, digits and '-', starting and ending with a letter or digit)"
        )
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
        raise DeployError(f"{where}: weight must be an integer from 0 to 100, got {weight!r}")
    if not isinstance(model, str):
        raise DeployError(f"{where}: model must be a string, got {model!r}")
    try:
        check_model_uri(model)
    except DeployError as exc:
        raise DeployError(f"{where}: {exc}") from None
    if image is not None and (not isinstance(image, str) or not image or " " in image):
        raise DeployError(f"{where}: image must be an image reference, got {image!r}")
    return Version(name=name, model=model, weight=weight, image=image)


def load_values(path: Path) -> dict[str, Any]:
    """Read and validate a deploy values file."""
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DeployError(f"{path}: no such deploy values file") from None
    except yaml.YAMLError as exc:
        raise DeployError(f"{path}: not valid YAML ({exc})") from None
    try:
        parse_versions(values)
    except DeployError as exc:
        raise DeployError(f"{path}: {exc}") from None
    return dict(values)


def save_values(values: Mapping[str, Any], path: Path) -> None:
    """Validate and write a deploy values file atomically (key order kept)."""
    parse_versions(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(yaml.safe_dump(dict(values), sort_keys=False))
    os.replace(scratch, path)


def set_weights(values: Mapping[str, Any], weights: Mapping[str, int]) -> dict[str, Any]:
    """New values with these versions' weights changed (the result must still sum to 100)."""
    names = [v.name for v in parse_versions(values)]
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise DeployError(f"set weights: no version {unknown[0]!r} (versions: {', '.join(names)})")
    entries = [
        {**entry, "weight": weights.get(entry["name"], entry["weight"])}
        for entry in values["versions"]
    ]
    changed = {**values, "versions": entries}
    parse_versions(changed)
    return changed


def promote(values: Mapping[str, Any], name: str) -> dict[str, Any]:
    """New values sending all traffic to version `name` (the others stay deployed at weight 0)."""
    names = [v.name for v in parse_versions(values)]
    if name not in names:
        raise DeployError(f"promote: no version {name!r} (versions: {', '.join(names)})")
    return set_weights(values, {n: 100 if n == name else 0 for n in names})


def parse_weight_assignments(assignments: list[str]) -> dict[str, int]:
    """`["v1=90", "v2=10"]` as `{"v1": 90, "v2": 10}`."""
    weights: dict[str, int] = {}
    for item in assignments:
        name, sep, number = item.partition("=")
        if not sep or not name or not number.strip().isdigit():
            raise DeployError(f"weight {item!r}: expected NAME=WEIGHT, e.g. v2=10")
        weights[name.strip()] = int(number)
    return weights


def route_weights(values: Mapping[str, Any]) -> dict[str, int]:
    """Traffic share per version as the HTTPRoute splits it (weight-0 versions included)."""
    return {v.name: v.weight for v in parse_versions(values)}


def route_paths(values: Mapping[str, Any]) -> tuple[str, ...]:
    """The routed path prefixes: the chart's `route.paths`, or its defaults."""
    route = values.get("route") or {}
    paths = route.get("paths") if isinstance(route, Mapping) else None
    return tuple(paths) if paths else DEFAULT_PATHS


def render_compose_gateway(
    values: Mapping[str, Any],
    revision: int = 0,
    listen_port: int = GATEWAY_PORT,
    predictor_port: int = PREDICTOR_PORT,
) -> str:
    """nginx conf.d file: the HTTPRoute's weighted split over the Compose predictor services."""
    versions = parse_versions(values)
    comments = [f"#   {v.name}: {v.model}, weight {v.weight}" for v in versions]
    servers = [
        f"    server predictor-{v.name}:{predictor_port} "
        f"{f'weight={v.weight}' if v.weight else 'backup'} max_fails=1 fail_timeout=5s;"
        for v in versions
    ]
    prefixes = "|".join(re.escape(p.strip("/")) for p in route_paths(values))
    return "\n".join(
        [
            "# Generated by `kws deploy` from deploy values: do not edit.",
            "# The Compose twin of the chart's HTTPRoute: the same versions, the same weights.",
            f"# Deploy revision: {revision}",
            *comments,
            f"upstream {GATEWAY_UPSTREAM} {{",
            "    zone kws_predictors 64k;  # one round-robin state shared by every worker",
            "    # weight 0 (nginx has no such weight) is a `backup`: it gets a request only when",
            "    # every weighted version failed it, so a version at 0 still backs the others up",
            *servers,
            "    keepalive 16;",
            "}",
            "",
            "server {",
            f"    listen {listen_port};",
            "    client_max_body_size 8m;  # the predictor enforces its own limits (413 JSON)",
            "",
            "    location = /gateway/health {",
            "        access_log off;",
            '        return 200 "ok\\n";',
            "    }",
            "",
            "    # which revision this gateway runs: `kws deploy` waits for it after a reload",
            "    location = /gateway/revision {",
            "        access_log off;",
            "        default_type text/plain;",
            f'        return 200 "{revision}\\n";',
            "    }",
            "",
            f"    location ~ ^/({prefixes})(/|$) {{",
            f"        proxy_pass http://{GATEWAY_UPSTREAM};",
            "        proxy_http_version 1.1;",
            '        proxy_set_header Connection "";',
            "        proxy_set_header Host $host;",
            "        proxy_set_header X-Request-ID $request_id;",
            "        # Inference routes have no side effects (a prediction changes no state), so",
            "        # retrying a POST that failed to connect, timed out or met a predictor that",
            "        # is not ready (503) on another version is safe: nginx does not retry",
            "        # non-idempotent requests unless told to.",
            "        proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;",
            "        proxy_next_upstream_tries 2;",
            "        proxy_connect_timeout 2s;",
            "        proxy_read_timeout 30s;",
            "        add_header X-Kws-Upstream $upstream_addr always;",
            "    }",
            "}",
            "",
        ]
    )


def gateway_weights(config: str) -> dict[str, int]:
    """Weight per version name read back from a rendered gateway config (backup = 0 traffic)."""
    return {name: int(weight) for name, weight in _GATEWAY_SERVER.findall(config)}


def render_helm(
    values: Mapping[str, Any],
    chart: Path,
    release: str = "kws",
    namespace: str = "kws",
) -> str:
    """The chart's manifests for these values, rendered offline by Helm's own engine."""
    parse_versions(values)
    try:
        import helm_python
    except ImportError:
        raise DeployError(
            "rendering the chart needs helm-python-sdk (pip install helm-python-sdk)"
        ) from None
    try:
        with helm_python.Chart.load(chart) as loaded:
            rendered = loaded.render(dict(values), name=release, namespace=namespace)
    except helm_python.HelmError as exc:
        raise DeployError(f"helm: {exc}".strip()) from None
    documents = [
        f"# Source: {path}\n{text.strip()}\n"
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt") and text.strip()
    ]
    return "---\n".join(documents)


@dataclass(frozen=True)
class Revision:
    """One recorded state of the deploy values, numbered from 1 like Helm's release revisions."""

    number: int
    values: dict[str, Any]
    description: str
    updated: str


class History:
    """Numbered revisions of the deploy values in a state folder (`revisions/000001.yaml`...)."""

    def __init__(self, state: Path) -> None:
        self.folder = state / "revisions"

    def revisions(self) -> list[Revision]:
        """Every revision, oldest first."""
        if not self.folder.is_dir():
            return []
        return [self._read(path) for path in sorted(self.folder.glob("[0-9]*.yaml"))]

    def current(self) -> Revision | None:
        """The latest revision (what is deployed), or None before the first one."""
        revisions = self.revisions()
        return revisions[-1] if revisions else None

    def apply(self, values: Mapping[str, Any], description: str) -> Revision:
        """Record `values` as the next revision (N + 1)."""
        parse_versions(values)
        current = self.current()
        revision = Revision(
            number=current.number + 1 if current else 1,
            values=dict(values),
            description=description,
            updated=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        document = yaml.safe_dump(
            {
                "revision": revision.number,
                "updated": revision.updated,
                "description": revision.description,
                "values": revision.values,
            },
            sort_keys=False,
        )
        final = self.folder / f"{revision.number:06d}.yaml"
        scratch = self.folder / f".{revision.number:06d}.{os.getpid()}.tmp"
        scratch.write_text(document)
        try:
            os.link(scratch, final)  # atomic and exclusive: a revision is never overwritten
        except FileExistsError:
            raise DeployError(
                f"revision {revision.number} was written by another kws deploy meanwhile: retry"
            ) from None
        finally:
            scratch.unlink()
        return revision

    def rollback(self, to: int | None = None) -> Revision:
        """Record an earlier revision's values as a new one (default: the one before the latest)."""
        target = self.target(to)
        return self.apply(target.values, f"Rollback to {target.number}")

    def target(self, to: int | None = None) -> Revision:
        """The revision a rollback returns to (default: the one before the latest)."""
        revisions = self.revisions()
        if to is None:
            if len(revisions) < 2:
                raise DeployError(f"rollback: no previous revision ({len(revisions)} recorded)")
            to = revisions[-2].number
        by_number = {r.number: r for r in revisions}
        if to not in by_number:
            raise DeployError(f"rollback: no revision {to} ({len(revisions)} recorded)")
        return by_number[to]

    def _read(self, path: Path) -> Revision:
        try:
            document = yaml.safe_load(path.read_text())
            return Revision(
                number=int(document["revision"]),
                values=dict(document["values"]),
                description=str(document["description"]),
                updated=str(document["updated"]),
            )
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise DeployError(f"{path}: not a deploy revision ({exc})") from None


def record_file(history: History, values: Mapping[str, Any], source: Path) -> Revision:
    """Make the history's latest revision equal the values file (recording a first install or a
    hand edit of the file as a revision of its own), so that a rollback undoes the last change."""
    current = history.current()
    if current is None:
        return history.apply(values, f"Install from {source}")
    if current.values != dict(values):
        return history.apply(values, f"Edited {source} outside kws deploy")
    return current


Applier = Callable[[Mapping[str, Any], int], None]
"""Puts values into effect as revision N before they are recorded (raises DeployError if not)."""


def change_file(
    path: Path,
    state: Path,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    description: str,
    apply: Applier | None = None,
) -> Revision:
    """Apply `change` to a values file: validate, put into effect, write the file, record it."""
    history = History(state)
    values = load_values(path)
    changed = change(values)  # a change that fails leaves the file and the history alone
    parse_versions(changed)
    current = record_file(history, values, path)
    if apply is not None:
        apply(changed, current.number + 1)  # a failure here also leaves both alone
    save_values(changed, path)
    return history.apply(changed, description)


def rollback_file(
    path: Path, state: Path, to: int | None = None, apply: Applier | None = None
) -> Revision:
    """Write an earlier revision's values back to the values file, as a new revision."""
    history = History(state)
    current = record_file(history, load_values(path), path)
    target = history.target(to)
    if apply is not None:
        apply(target.values, current.number + 1)
    revision = history.apply(target.values, f"Rollback to {target.number}")
    save_values(revision.values, path)
    return revision


def apply_file(path: Path, state: Path, apply: Applier) -> Revision:
    """Put the values file into effect as it is (recording it first if it changed)."""
    history = History(state)
    values = load_values(path)
    current = record_file(history, values, path)
    apply(values, current.number)
    return current


class ComposeGateway:
    """The Compose stack's nginx gateway: render, check (`nginx -t`), reload, confirm.

    `docker compose` runs in the current folder and honours COMPOSE_PROJECT_NAME,
    COMPOSE_FILE and COMPOSE_ENV_FILES, so it finds the same stack `docker compose up` made.
    """

    def __init__(
        self,
        conf: Path,
        compose: tuple[str, ...] = ("docker", "compose"),
        service: str = "gateway",
        timeout: float = 20.0,
    ) -> None:
        self.conf = conf
        self.compose = compose
        self.service = service
        self.timeout = timeout

    def __call__(self, values: Mapping[str, Any], revision: int) -> None:
        """Send traffic as `values` say (revision N), or raise and leave the gateway as it was."""
        for version in parse_versions(values):
            if version.weight > 0:
                self.check_ready(version.name)
        config = render_compose_gateway(values, revision)
        previous = self.conf.read_text() if self.conf.exists() else None
        self._write(config)
        try:
            self.exec("nginx", "-t", what="the gateway rejected the new config")
            self.exec("nginx", "-s", "reload", what="the gateway did not reload")
        except DeployError:
            if previous is None:
                self.conf.unlink()
            else:
                self._write(previous)
            raise
        self.wait_for_revision(revision)

    def check_ready(self, name: str) -> None:
        """Raise unless predictor-NAME answers ready, as seen from the gateway."""
        url = f"http://predictor-{name}:{PREDICTOR_PORT}/v2/health/ready"
        self.exec(
            "curl", "-fsS", "-o", "/dev/null", "--max-time", "3", url,
            what=f"{name} is not ready, so it gets no traffic (nothing changed)",
        )  # fmt: skip

    def revision(self) -> str:
        """The revision the running gateway config names."""
        url = f"http://127.0.0.1:{GATEWAY_PORT}/gateway/revision"
        return self.exec("curl", "-fsS", "--max-time", "2", url, what="no gateway").strip()

    def wait_for_revision(self, revision: int) -> None:
        """Return once new connections get revision N's config (nginx reloads asynchronously)."""
        deadline = time.monotonic() + self.timeout
        while self.revision() != str(revision):
            if time.monotonic() > deadline:
                raise DeployError(f"the gateway still runs an older config after {self.timeout} s")
            time.sleep(0.1)

    def exec(self, *command: str, what: str) -> str:
        """Run a command in the gateway container; its stdout, or DeployError(what: output)."""
        args = [*self.compose, "exec", "-T", self.service, *command]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError:
            raise DeployError(f"{what}: {self.compose[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise DeployError(f"{what}: `{' '.join(args)}` timed out") from None
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
            detail = lines[-1].strip() if lines else f"exit {proc.returncode}"
            raise DeployError(f"{what}: {detail}")
        return proc.stdout

    def _write(self, text: str) -> None:
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.conf.with_name(f".{self.conf.name}.tmp")  # not *.conf: nginx skips it
        scratch.write_text(text)
        os.replace(scratch, self.conf)


def describe(values: Mapping[str, Any]) -> str:
    """One line: `v1=90 (models:/kws/1) v2=10 (models:/kws/2)`."""
    return " ".join(f"{v.name}={v.weight} ({v.model})" for v in parse_versions(values))
