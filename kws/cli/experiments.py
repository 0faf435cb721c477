"""`kws experiments run`, `kws tune`, `kws report compare`: comparable runs and the search."""

from __future__ import annotations

from pathlib import Path

import typer

from kws.cli.options import (
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
    variation: list[str] = typer.Option(
        None, help="Only these rows (repeatable; default: all of kws.experiments.VARIATIONS)."
    ),
    output: Path = typer.Option(Path("docs/results/experiments.md"), help="Markdown table."),
    workdir: Path = typer.Option(Path(".cache/kws/experiments"), help="Per-run outputs."),
) -> None:
    """Train, export and score the v1 baseline, the v2 default (params.yaml) and variations of
    the default in one MLflow experiment; write the comparison table."""
    from kws.experiments import (  # TF + MLflow
        DEFAULT,
        VARIATIONS,
        markdown_table,
        resolve_variation,
        run_experiments,
    )

    names = variation or list(VARIATIONS)
    runs = {name: resolve_variation(params, set_, overlay, name) for name in names}
    default = resolve_variation(params, set_, overlay, DEFAULT)
    command = command_line()
    rows = run_experiments(runs, default, workdir, command)
    table = markdown_table(rows, command)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    typer.echo(table)


def tune(
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    trials: int = typer.Option(8, min=1, help="Trials to run now (a study resumes)."),
    storage: str = typer.Option("sqlite:///optuna.db", help="Optuna RDB storage URL."),
    study_name: str | None = typer.Option(
        None, help="Study name (same name = resume); default: kws-<digest of the params>."
    ),
    output: Path = typer.Option(
        Path("pipelines/configs/params/tuned.yaml"), help="Best params overlay."
    ),
    plots: Path = typer.Option(Path("docs/results"), help="Where the Optuna plots go."),
) -> None:
    """Optuna search (seeded TPE, median pruning) of the head and training settings:
    width, dropout, fine_tune (n_mels for other architectures), learning rate, epochs,
    label smoothing. Chosen on the val speaker; the test speaker is only reported."""
    from kws import stages  # TensorFlow + MLflow: loaded when run
    from kws.tune import study_name_for  # Optuna + TF + MLflow
    from kws.tune import tune as run_tune  # Optuna + TF + MLflow

    p = load(params, set_, overlay)
    study_name = study_name or study_name_for(p)
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
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    storage: str = typer.Option("sqlite:///optuna.db", help="Optuna storage of the study."),
    study_name: str | None = typer.Option(
        None, help="Study whose best trial to include; default: that `kws tune` of the params."
    ),
    output: Path = typer.Option(Path("docs/results/comparison.md"), help="Markdown (+ .csv)."),
) -> None:
    """One table of the v1 baseline, the v2 default, its variations and the best Optuna trial."""
    from kws.experiments import comparison_rows, study_commands, write_comparison  # MLflow
    from kws.tune import study_name_for  # TF + Optuna: loaded when run

    study_name = study_name or study_name_for(load(params, set_, overlay))

    rows = comparison_rows(storage, study_name)
    if not rows:
        raise KwsError("nothing to compare yet: run `kws experiments run` and `kws tune`")
    csv_path = write_comparison(rows, output, command_line(), study_commands(storage, study_name))
    typer.echo(output.read_text())
    typer.echo(f"written {output} and {csv_path}")
