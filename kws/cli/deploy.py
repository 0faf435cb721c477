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

KIND_VALUES = Path("manifests/gitops/values-kind.yaml")
COMPOSE_VALUES = Path("docker/gateway/values.yaml")
GATEWAY_CONF = Path("docker/gateway/conf.d/kws-gateway.conf")

ValuesOption = typer.Option(
    None,
    "--values",
    "-f",
    envvar="KWS_DEPLOY_VALUES",
    help=f"Deploy values file (env KWS_DEPLOY_VALUES; default {KIND_VALUES}, "
    f"with --apply compose {COMPOSE_VALUES}).",
)
StateOption = typer.Option(
    Path(".cache/deploy"),
    "--state",
    envvar="KWS_DEPLOY_STATE",
    help="Folder of the numbered revision history (env KWS_DEPLOY_STATE).",
)


class Apply(StrEnum):
    """Where a change of the values is put into effect."""

    none = "none"
    compose = "compose"


ApplyOption = typer.Option(
    Apply.none,
    "--apply",
    envvar="KWS_DEPLOY_APPLY",
    help="none: change the values file only (Helm / Argo CD deploy it); compose: also "
    "re-render the Compose gateway, `nginx -t` and reload it (env KWS_DEPLOY_APPLY).",
)
GatewayOption = typer.Option(
    GATEWAY_CONF,
    "--gateway-conf",
    envvar="KWS_GATEWAY_CONF",
    help="The gateway's nginx file, in the folder the gateway mounts (env KWS_GATEWAY_CONF).",
)


def values_path(values: Path | None, apply: Apply) -> Path:
    """The values file given, or the default of the target."""
    if values is not None:
        return values
    return COMPOSE_VALUES if apply is Apply.compose else KIND_VALUES


def applier(apply: Apply, gateway_conf: Path) -> deploy.Applier | None:
    """What puts a change into effect (None: the values file is the deployment)."""
    return deploy.ComposeGateway(gateway_conf) if apply is Apply.compose else None


class Target(StrEnum):
    """Where the values are rendered for."""

    compose = "compose"
    helm = "helm"


@app.command()
def render(
    target: Target = typer.Option(..., help="compose: nginx gateway config; helm: manifests."),
    values: Path | None = ValuesOption,
    out: Path = typer.Option(Path(".cache/deploy/render"), help="Output folder."),
    chart: Path = typer.Option(Path("charts/kws"), help="Chart folder (--target helm)."),
    release: str = typer.Option("kws", help="Helm release name (--target helm)."),
    namespace: str = typer.Option("kws", help="Namespace (--target helm)."),
) -> None:
    """Render the values for Compose (gateway.conf) or Kubernetes (manifests.yaml)."""
    loaded = deploy.load_values(
        values_path(values, Apply.compose if target is Target.compose else Apply.none)
    )
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
    values: Path | None = ValuesOption,
    state: Path = StateOption,
    apply: Apply = ApplyOption,
    gateway_conf: Path = GatewayOption,
) -> None:
    """Change traffic weights (they must sum to 100) and record a new revision."""
    parsed = deploy.parse_weight_assignments(weights)
    revision = deploy.change_file(
        values_path(values, apply),
        state,
        lambda current: deploy.set_weights(current, parsed),
        f"Set weights {' '.join(weights)}",
        applier(apply, gateway_conf),
    )
    typer.echo(f"revision {revision.number}: {deploy.describe(revision.values)}")


@app.command()
def promote(
    name: str = typer.Argument(..., help="The version that gets all traffic."),
    values: Path | None = ValuesOption,
    state: Path = StateOption,
    apply: Apply = ApplyOption,
    gateway_conf: Path = GatewayOption,
) -> None:
    """Send all traffic to one version (the others stay deployed at weight 0)."""
    revision = deploy.change_file(
        values_path(values, apply),
        state,
        lambda current: deploy.promote(current, name),
        f"Promote {name}",
        applier(apply, gateway_conf),
    )
    typer.echo(f"revision {revision.number}: {deploy.describe(revision.values)}")


@app.command()
def rollback(
    to: int | None = typer.Argument(None, help="Revision to return to (default: the previous)."),
    values: Path | None = ValuesOption,
    state: Path = StateOption,
    apply: Apply = ApplyOption,
    gateway_conf: Path = GatewayOption,
) -> None:
    """Return to an earlier revision's values, recorded as a new revision (like helm rollback)."""
    revision = deploy.rollback_file(
        values_path(values, apply), state, to, applier(apply, gateway_conf)
    )
    typer.echo(f"revision {revision.number}: {deploy.describe(revision.values)}")


@app.command("apply")
def apply_values(
    values: Path | None = ValuesOption,
    state: Path = StateOption,
    gateway_conf: Path = GatewayOption,
) -> None:
    """Put the values file into effect on the Compose gateway as it is (after a hand edit, or
    after a predictor came back: the reload also looks its address up again)."""
    gateway = deploy.ComposeGateway(gateway_conf)
    revision = deploy.apply_file(values_path(values, Apply.compose), state, gateway)
    typer.echo(f"revision {revision.number} applied: {deploy.describe(revision.values)}")


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
