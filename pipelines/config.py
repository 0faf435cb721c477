"""Run configurations of the training pipeline (no ZenML import: cheap to check).

A run config (pipelines/configs/NAME.yaml) is a ZenML run configuration whose
`extra.kws` names the params: params.yaml, then `overlays` (relative to the config
file), then `set` (`key=value`), then the command line's own --overlay / --set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kws.errors import ParamsError
from kws.params import Params, read_yaml_mapping, resolve_params

ROOT = Path(__file__).resolve().parents[1]  # the source root ZenML packages for remote runs
CONFIGS = Path(__file__).resolve().parent / "configs"
KIND_SETTINGS = Path(__file__).resolve().parent / "stacks" / "kind" / "settings.yaml"


def config_path(config: str | Path) -> Path:
    """`baseline`, `variant`, `smoke` (pipelines/configs/NAME.yaml) or a YAML file."""
    path = Path(config)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIGS / f"{config}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise ParamsError(f"unknown pipeline config {str(config)!r} ({names} or a YAML file)")
    return path


def resolve_config(
    config: str | Path,
    params_file: Path = Path("params.yaml"),
    overrides: list[str] | None = None,
    overlays: list[Path] | None = None,
) -> tuple[Path, Params]:
    """The run config file and the params it asks for: params.yaml, its overlays, then ours."""
    path = config_path(config)
    kws_config = (read_yaml_mapping(path, "pipeline config").get("extra") or {}).get("kws") or {}
    config_overlays = [path.parent / str(o) for o in kws_config.get("overlays") or []]
    config_sets = [str(s) for s in kws_config.get("set") or []]
    params = resolve_params(
        params_file, [*config_sets, *(overrides or [])], [*config_overlays, *(overlays or [])]
    )
    return path, params


def kubernetes_settings(path: Path = KIND_SETTINGS) -> dict[str, Any]:
    """Docker and Kubernetes orchestrator settings of the kind stack (paths made absolute)."""
    settings = dict(read_yaml_mapping(path, "stack settings")["settings"])
    docker = settings.get("docker") or {}
    for key in ("dockerfile", "build_context_root"):
        if docker.get(key):
            docker[key] = str(ROOT / docker[key])
    return settings
