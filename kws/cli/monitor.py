"""`kws monitor`: the drift report of a running service, and the Grafana dashboard file."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Monitoring: drift reports and the Grafana dashboard.", no_args_is_help=True)


@app.command("report")
def report(
    source: str = typer.Option(
        ...,
        "--from",
        help="A predictor's /metrics URL, a saved copy of it, or a Prometheus base URL.",
    ),
    fail_on_drift: bool = typer.Option(
        False, help="Exit with status 3 when a statistic has drifted (for scripts and CI)."
    ),
) -> None:
    """Drift per statistic (PSI against the model's reference), threshold and status."""
    from kws.drift import report_lines  # light (numpy), beside the one below
    from kws.monitoring import read_drift  # light: urllib and kws.drift

    reading = read_drift(source)
    typer.echo(f"drift of {reading.source}")
    for line in report_lines(reading.rows, reading.window):
        typer.echo(line)
    if fail_on_drift and reading.drifted:
        raise typer.Exit(3)


@app.command("dashboard")
def dashboard(
    out: Path = typer.Option(
        Path("docker/grafana/dashboards/kws.json"), help="Where to write the dashboard JSON."
    ),
) -> None:
    """Write the Grafana dashboard generated in code (grafana-foundation-sdk)."""
    from kws.dashboard import write_dashboard  # grafana-foundation-sdk: loaded when run

    typer.echo(f"dashboard {write_dashboard(out)}")
