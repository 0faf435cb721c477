"""`kws registry`: versions, champion/challenger aliases, promotion, rollback, the gate."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from kws.cli.options import OverlayOption, ParamsOption, SetOption, load

app = typer.Typer(
    help="MLflow model registry: versions, champion/challenger, promotion gate.",
    no_args_is_help=True,
)


def _registry(params: Path, set_: list[str] | None, overlay: list[Path] | None) -> Any:
    from kws.registry import Registry  # MLflow: imported when a registry command runs

    return Registry(load(params, set_, overlay).registry.model_name)


@app.command("list")
def registry_list(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Registered versions, newest first, with aliases and test accuracy."""
    reg = _registry(params, set_, overlay)
    versions = reg.versions()
    if not versions:
        typer.echo(f"no versions of {reg.name!r} yet (run `kws export`)")
        return
    typer.echo("version  aliases              accuracy  macro_f1  architecture      created")
    for v in versions:
        typer.echo(
            f"{v.version:<7}  {','.join(v.aliases) or '-':<19}  "
            f"{v.tags.get('accuracy', '-')[:6]:<8}  {v.tags.get('macro_f1', '-')[:6]:<8}  "
            f"{v.tags.get('architecture', '-'):<16}  {v.created}"
        )


@app.command("show")
def registry_show(
    version: str,
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
) -> None:
    """One version: aliases, run, tags; and the champion history."""
    reg = _registry(params, set_, overlay)
    typer.echo(
        json.dumps({**asdict(reg.show(version)), "champion_history": reg.history()}, indent=2)
    )


@app.command("promote")
def registry_promote(
    version: str,
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
) -> None:
    """Point `champion` at VERSION (the previous champion is remembered for rollback)."""
    previous = _registry(params, set_, overlay).promote(version)
    typer.echo(f"champion: v{version} (was {'v' + previous if previous else 'none'})")


@app.command("rollback")
def registry_rollback(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Return `champion` to the version it pointed at before the last promotion."""
    reg = _registry(params, set_, overlay)
    current = reg.alias_version("champion")
    typer.echo(f"champion: v{reg.rollback()} (was v{current})")


@app.command("gate")
def registry_gate(
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    report: Path | None = typer.Option(None, help="Also write the decision as JSON here."),
) -> None:
    """Evaluate challenger and champion on the test split; promote only a better challenger."""
    from kws.data import load_prepared  # the gate evaluates: loaded when run
    from kws.files import write_json  # light, beside the heavy imports
    from kws.promotion import gate  # MLflow + evaluation: imported when the gate runs
    from kws.registry import Registry  # MLflow, as above

    p = load(params, set_, overlay)
    samples, _ = load_prepared(p)
    decision = gate(
        Registry(p.registry.model_name),
        [s for s in samples if s.split == "test"],
        p.registry.gate_margin,
    )
    if report is not None:
        write_json({**asdict(decision), "reason": decision.reason}, report)
    typer.echo(decision.reason)
