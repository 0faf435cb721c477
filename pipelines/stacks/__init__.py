"""ZenML stacks defined as files, applied idempotently.

A stack file uses the format of `zenml stack export` (`stack_name`, `zenml_version`,
`components`), with `${NAME}` placeholders filled from variables, plus an optional
`secrets:` section (ZenML secrets the components reference as `{{secret.key}}`).
Applying it creates what is missing and updates what differs, so it can run any number
of times; `zenml stack import` reads the same files once rendered.

    python -m kws_pipelines.stacks local [--var MLFLOW_TRACKING_URI=...]
    python -m kws_pipelines.stacks compose --var MLFLOW_TRACKING_URI=http://mlflow:5000 ...
    python -m kws_pipelines.stacks kind --var NODE_IP=172.18.0.2 --var MINIO_ACCESS_KEY=...
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path
from typing import Any

import yaml

from kws.errors import ParamsError

STACKS = Path(__file__).resolve().parent
STACK_FILES = {
    "local": STACKS / "local.yaml",
    "compose": STACKS / "compose.yaml",
    "kind": STACKS / "kind" / "stack.yaml",
}


def stack_file(name_or_path: str) -> Path:
    """`local`, `compose`, `kind` or a stack YAML file."""
    path = STACK_FILES.get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        raise ParamsError(f"unknown stack {name_or_path!r} ({', '.join(STACK_FILES)} or a file)")
    return path


def render(path: Path, variables: dict[str, str]) -> dict[str, Any]:
    """The stack file with its ${NAME} placeholders filled in."""
    template = string.Template(path.read_text())
    if not template.is_valid():
        raise ParamsError(f"{path.name}: a $ that is not a ${{NAME}} placeholder")
    missing = [name for name in template.get_identifiers() if name not in variables]
    if missing:
        raise ParamsError(f"{path.name} needs {', '.join(missing)} (--var NAME=VALUE)")
    text = template.substitute(variables)
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict) or "stack_name" not in spec or "components" not in spec:
        raise ParamsError(f"{path} is not a stack file (stack_name, components)")
    return spec


def apply_stack(
    name_or_path: str, variables: dict[str, str] | None = None, activate: bool = True
) -> dict[str, Any]:
    """Create or update the stack, its components and secrets; return what was done."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    spec = render(stack_file(name_or_path), variables or {})
    client = Client()
    for secret, values in (spec.get("secrets") or {}).items():
        _ensure_secret(client, secret, {k: str(v) for k, v in values.items()})
    components: dict[StackComponentType, list[str]] = {}
    tracking_uri = None
    for type_name, entries in spec["components"].items():
        kind = StackComponentType(type_name)
        for entry in entries if isinstance(entries, list) else [entries]:
            configuration = entry.get("configuration") or {}
            _ensure_component(client, kind, entry["name"], entry["flavor"], configuration)
            components.setdefault(kind, []).append(entry["name"])
            if kind == StackComponentType.EXPERIMENT_TRACKER:
                tracking_uri = configuration.get("tracking_uri")
    name = spec["stack_name"]
    try:
        client.get_stack(name, allow_name_prefix_match=False)
    except KeyError:
        client.create_stack(name, components=components)
        action = "created"
    else:
        client.update_stack(name, component_updates=components)
        action = "updated"
    if activate:
        client.activate_stack(name)
    return {
        "stack": name,
        "action": action,
        "active": activate,
        "components": {k.value: v for k, v in components.items()},
        "tracking_uri": tracking_uri,
    }


def _ensure_secret(client: Any, name: str, values: dict[str, str]) -> None:
    try:
        client.get_secret(name, allow_partial_name_match=False, allow_partial_id_match=False)
    except KeyError:
        client.create_secret(name, values)
    else:
        client.update_secret(name, add_or_update_values=values)


def _ensure_component(
    client: Any, kind: Any, name: str, flavor: str, configuration: dict[str, Any]
) -> None:
    try:
        existing = client.get_stack_component(kind, name, allow_name_prefix_match=False)
    except KeyError:
        client.create_stack_component(name, flavor, kind, configuration)
        return
    if existing.flavor_name != flavor:
        raise ParamsError(
            f"{kind.value} {name!r} already exists with flavor {existing.flavor_name!r}"
        )
    if any(existing.configuration.get(k) != v for k, v in configuration.items()):
        client.update_stack_component(name, kind, configuration=configuration)


def parse_vars(items: list[str] | None) -> dict[str, str]:
    """NAME=VALUE pairs."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--var expects NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def main() -> None:
    """Command line: apply a stack file and print what was done."""
    parser = argparse.ArgumentParser(description="Create or update a ZenML stack from its file.")
    parser.add_argument("stack", help="local, compose, kind or a stack YAML file")
    parser.add_argument("--var", action="append", help="NAME=VALUE for a ${NAME} placeholder")
    parser.add_argument("--no-activate", action="store_true", help="do not make it active")
    args = parser.parse_args()
    summary = apply_stack(args.stack, parse_vars(args.var), activate=not args.no_activate)
    print(f"stack {summary['stack']!r} {summary['action']}: {summary['components']}")


if __name__ == "__main__":
    main()
