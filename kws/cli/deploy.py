"""`kws deploy`: thin commands over kws.deploy (render, set-weights, promote, rollback, history)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from kws import deploy

app = typer.Typer(
    help="Deployed model versions and traffic weights: one values file for Helm and Compose.",
    no_args_is_help=True,
)

ValuesOption = typer.Option(
    Path("manifests/gitops/values-kind.yaml"),
    "--values",
    "-f",
    envvar="KWS_DEPLOY_VALUES",
    help="Deploy values file (versions, weights; env KWS_DEPLOY_VALUES).",
)
StateOption = typer.Option(
    Path(".cache/deploy"),
    "--state",
    envvar="KWS_DEPLOY_STATE",
    help="Folder of the numbered revision history (env KWS_DEPLOY_STATE).",
)


class Target(StrEnum):
    """Where the values are rendered for."""

    compose = "compose"
    helm = "helm"


@app.command()
def render(
    target: Target = typer.Option(..., help="compose: nginx gateway config; helm: manifests."),
    values: Path = ValuesOption,
    out: Path = typer.Option(Path(".cache/deploy/render"), help="Output folder."),
    chart: Path = typer.Option(Path("charts/kws"), help="Chart folder (--target helm)."),
    release: str = typer.Option("kws", help="Helm release name (--target helm)."),
    namespace: str = typer.Option("kws", help="Namespace (--target helm)."),
) -> None:
    """Render the values for Compose (gateway.conf) or Kubernetes (manifests.yaml)."""
    loaded = deploy.load_values(values)
    out.mkdir(parents=True, exist_ok=True)
    if target is Target.compose:
        written = out / "gateway.conf"
        written.write_text(deploy.render_compose_gateway(loaded))
    else:
        written = out / "manifests.yaml"
        written.write_text(deploy.render_helm(loaded, chart, release, namespace))
    typer.echo(f"{written}: {deploy.describe(loaded)}")


@app.command("set-weights")
def set_weights(
    weights: list[str] = typer.Argument(..., help="NAME=WEIGHT pairs, e.g. v1=90 v2=10."),
    values: Path = ValuesOption,
    state: Path = StateOption,
) -> None:
    """Change traffic weights (they must sum to 100) and record a new revision."""
    parsed = deploy.parse_weight_assignments(weights)
    revision = deploy.change_file(
        values,
        state,
        lambda current: deploy.set_weights(current, parsed),
        f"Set weights {' '.join(weights)}",
    )
    typer.echo(f"revision {revision.number}: {deploy.describe(revision.values)}")


@app.command()
def promote(
    name: str = typer.Argument(..., help="The version that gets all traffic."),
    values: Path = ValuesOption,
    state: Path = StateOption,
) -> None:
    """Send all traffic to one version (the others stay deployed at weight 0)."""
    revision = deploy.change_file(
        values, state, lambda current: deploy.promote(current, name), f"Promote {name}"
    )
    typer.echo(f"revision {revision.number}: {deploy.describe(revision.values)}")


@app.command()
def rollback(
    to: int | None = typer.Argument(None, help="Revision to return to (default: the previous)."),
    values: Path = ValuesOption,
    state: Path = StateOption,
) -> None:
    """Return to an earlier revision's values, recorded as a new revision (like helm rollback)."""
    revision = deploy.rollback_file(values, state, to)
    typer.echo(f"revision {revision.number}: {deploy.describe(revision.values)}")


@app.command()
def history(state: Path = StateOption) -> None:
    """List the revisions, oldest first (like helm history)."""
    revisions = deploy.History(state).revisions()
    if not revisions:
        typer.echo(f"no revisions in {state} yet")
        return
    typer.echo(f"{'REVISION':<9} {'UPDATED':<26} {'STATUS':<11} {'WEIGHTS':<24} DESCRIPTION")
    for revision in revisions:
        status = "deployed" if revision is revisions[-1] else "superseded"
        weights = " ".join(f"{n}={w}" for n, w in deploy.route_weights(revision.values).items())
        typer.echo(
            f"{revision.number:<9} {revision.updated:<26} {status:<11} {weights:<24} "
            f"{revision.description}"
        )


if __name__ == "__main__":  # scripts may run it before it is mounted as `kws deploy`
    app()
