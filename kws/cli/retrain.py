"""`kws retrain`: continuous training behind the promotion gate (kws.retrain)."""

from __future__ import annotations

from pathlib import Path

import typer

from kws.cli.options import OverlayOption, ParamsOption, SetOption, load


def retrain(
    when: str = typer.Option(
        ..., "--when", help="drift (a drift score above its threshold), schedule or always."
    ),
    drift_source: str | None = typer.Option(
        None,
        "--drift-source",
        envvar="KWS_DRIFT_SOURCE",
        help="--when drift: a predictor's /metrics URL (or saved copy) or a Prometheus URL.",
    ),
    canary_weight: int = typer.Option(
        0, help="Write this traffic % for a promoted model into --values (never applied)."
    ),
    values: Path | None = typer.Option(
        None, "--values", "-f", help="Deploy values file the canary is written into."
    ),
    state: Path = typer.Option(
        Path(".cache/deploy"), envvar="KWS_DEPLOY_STATE", help="Deploy revision history folder."
    ),
    report: Path | None = typer.Option(None, help="Also write the outcome as JSON here."),
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
) -> None:
    """Retrain on the current data when due; register, gate, promote only a better model."""
    from kws.errors import ParamsError  # light, beside the heavy import below
    from kws.files import write_json  # light, as above
    from kws.retrain import When  # loads TensorFlow and MLflow once retraining is due
    from kws.retrain import retrain as run  # as above

    try:
        trigger = When(when)
    except ValueError:
        raise ParamsError(f"--when {when!r}: expected drift, schedule or always") from None
    outcome = run(load(params, set_, overlay), trigger, drift_source, canary_weight, values, state)
    if report is not None:
        write_json(outcome.to_dict(), report)
    if not outcome.retrained:
        typer.echo(f"nothing to do: {outcome.reason}")
        return
    typer.echo(f"retrained ({outcome.reason}): registered version {outcome.version}")
    if outcome.decision is not None:
        typer.echo(outcome.decision["reason"])
    elif outcome.promoted:
        typer.echo(f"champion: v{outcome.version} (the first version)")
    if outcome.canary:
        typer.echo(f"canary proposed in {values}: {outcome.canary}")
