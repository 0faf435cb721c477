"""The options every stage command shares: --params, --overlay, --set."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from kws.params import Params, resolve_params

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="Parameters file.")
SetOption = typer.Option(
    None, "--set", "-s", help="Override a parameter, e.g. --set train.epochs=1 (repeatable)."
)
OverlayOption = typer.Option(
    None,
    "--overlay",
    "-o",
    help="Partial params YAML merged over --params, e.g. pipelines/configs/params/baseline.yaml.",
)


def load(params: Path, set_: list[str] | None, overlay: list[Path] | None) -> Params:
    """The params a command runs with: the file, its overlays, then --set overrides."""
    return resolve_params(params, set_, overlay)


def command_line() -> str:
    """This invocation as a copyable `kws ...` line (recorded in generated reports)."""
    return "kws " + " ".join(shlex.quote(a) for a in sys.argv[1:])
