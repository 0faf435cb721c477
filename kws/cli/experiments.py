"""`kws experiments run`, `kws tune`, `kws report compare`: comparable runs and the search."""

from __future__ import annotations

from pathlib import Path

import typer

from kws.cli.options import (
    BASELINE_OVERLAY,
    OverlayOption,
    ParamsOption,
    SetOption,
    command_line,
    load,
)
from kws.errors import KwsError

experiments_app = typer.Typer(
    help="Comparable runs in one MLflow experiment.", no_args_is_help=True
)
report_app = typer.Typer(help="Reports over tracked runs.", no_args_is_help=True)


@experiments_app.command("run")
def experiments_run(
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    variation: list[str] = typer.Option(None, help="Only these variations (repeatable)."),
    output: Path = typer.Option(Path("docs/results/experiments.md"), help="Markdown table."),
    workdir: Path = typer.Option(Path(".cache/kws/experiments"), help="Per-run outputs."),
    baseline: Path = typer.Option(BASELINE_OVERLAY, help="Overlay defining the baseline (v1)."),
) -> None:
    """Train the baseline (v1 overlay) and its variations; write the comparison table."""
    from kws.experiments import VARIATIONS, markdown_table, run_experiments  # TF + MLflow

    p = load(params, set_, [baseline, *(overlay or [])])
    rows = run_experiments(p, variation or list(VARIATIONS), workdir)
    table = markdown_table(rows, command_line())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    typer.echo(table)


def tune(
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    trials: int = typer.Option(8, min=1, help="Trials to run now (a study resumes)."),
    storage: str = typer.Option("sqlite:///optuna.db", help="Optuna RDB storage URL."),
    study_name: str = typer.Option("kws", help="Study name (same name = resume)."),
    output: Path = typer.Option(
        Path("pipelines/configs/params/tuned.yaml"), help="Best params overlay."
    ),
    plots: Path = typer.Option(Path("docs/results"), help="Where the Optuna plots go."),
) -> None:
    """Optuna search (seeded TPE, median pruning) over lr, dropout, width, n_mels, augmentation."""
    from kws import stages  # TensorFlow + MLflow: loaded when run
    from kws.tune import tune as run_tune  # Optuna + TF + MLflow

    p = load(params, set_, overlay)
    # the study's own copy of the prepared data: --set data.* must not touch data/prepared
    p = p.replace(paths={"prepared": str(Path(p.paths.cache) / "tune" / study_name)})
    stages.fetch(p)
    stages.prepare(p)
    result = run_tune(
        p,
        trials,
        storage,
        study_name,
        f"{p.registry.experiment}-tuning",
        output,
        plots,
        command=command_line(),
    )
    typer.echo(
        f"study {result.study_name}: {result.n_trials} trials, best trial "
        f"{result.best_trial} val accuracy {result.best_value:.4f} {result.best_params}"
    )
    typer.echo(f"best params overlay: {output} (kws train --overlay {output})")


@report_app.command("compare")
def report_compare(
    storage: str = typer.Option("sqlite:///optuna.db", help="Optuna storage of the study."),
    study_name: str = typer.Option("kws", help="Study whose best trial to include."),
    output: Path = typer.Option(Path("docs/results/comparison.md"), help="Markdown (+ .csv)."),
) -> None:
    """One table of the baseline, the variations and the best Optuna trial."""
    from kws.experiments import comparison_rows, study_commands, write_comparison  # MLflow

    rows = comparison_rows(storage, study_name)
    if not rows:
        raise KwsError("nothing to compare yet: run `kws experiments run` and `kws tune`")
    csv_path = write_comparison(rows, output, command_line(), study_commands(storage, study_name))
    typer.echo(output.read_text())
    typer.echo(f"written {output} and {csv_path}")
