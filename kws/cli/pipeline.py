"""`kws pipeline`: the ZenML training pipeline and its stacks (kws_pipelines, ZenML)."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import typer

from kws.cli.options import OverlayOption, ParamsOption, SetOption
from kws.errors import KwsError

app = typer.Typer(
    help="ZenML training pipeline: data → features → train → evaluate → export → register.",
    no_args_is_help=True,
)


def pipelines_module(module: str) -> Any:
    """A module of kws_pipelines, imported only when a pipeline command runs (it imports ZenML)."""
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")  # offline by default
    try:
        import zenml  # noqa: F401
    except ModuleNotFoundError as exc:
        raise KwsError("the pipeline needs ZenML: pip install -e '.[pipeline]'") from exc
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(handler)  # ZenML's console handler prints the same records
    return importlib.import_module(f"kws_pipelines.{module}")


@app.command("run")
def pipeline_run(
    config: str = typer.Option(
        "baseline",
        "--config",
        "-c",
        help="baseline, variant, smoke (pipelines/configs/NAME.yaml) or a run-config YAML.",
    ),
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
) -> None:
    """Run the training pipeline on the active ZenML stack (`make zenml-stack`: local)."""
    result = pipelines_module("training").run_pipeline(config, params, set_, overlay)
    typer.echo(f"pipeline run {result.run_name} ({result.run_id}): {result.status}")
    typer.echo(
        f"MLflow run {result.mlflow_run_id}; registered {result.model_name} "
        f"version {result.model_version}"
    )


@app.command("stack")
def pipeline_stack(
    name: str = typer.Argument("local", help="local, compose, kind or a stack YAML file."),
    var: list[str] = typer.Option(
        None, "--var", help="NAME=VALUE for a ${NAME} in the stack file (repeatable)."
    ),
    activate: bool = typer.Option(True, help="Make it the active stack."),
) -> None:
    """Create or update a ZenML stack from pipelines/stacks/ (idempotent) and activate it."""
    from kws.tracking import tracking_uri  # MLflow: loaded when run

    stacks = pipelines_module("stacks")
    variables = stacks.parse_vars(var)
    variables.setdefault("MLFLOW_TRACKING_URI", tracking_uri())  # the local stack's store
    summary = stacks.apply_stack(name, variables, activate)
    typer.echo(
        f"stack {summary['stack']!r} {summary['action']}{' and active' if activate else ''}: "
        + ", ".join(f"{kind} {', '.join(names)}" for kind, names in summary["components"].items())
    )
    if summary["tracking_uri"]:
        typer.echo(f"MLflow tracking and registry: {summary['tracking_uri']}")
