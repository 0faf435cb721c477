"""`kws` command line: thin adapters over the kws library, all reading params.yaml."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

import typer

from kws.errors import KwsError, ParamsError
from kws.params import resolve_params

app = typer.Typer(
    help="Keyword spotting: data, features, training, evaluation, export and prediction.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch and prepare datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
registry_app = typer.Typer(
    help="MLflow model registry: versions, champion/challenger, promotion gate.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")
experiments_app = typer.Typer(
    help="Comparable runs in one MLflow experiment.", no_args_is_help=True
)
app.add_typer(experiments_app, name="experiments")

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="Parameters file.")
SetOption = typer.Option(
    None, "--set", "-s", help="Override a parameter, e.g. --set train.epochs=1 (repeatable)."
)
BASELINE_OVERLAY = Path("pipelines/configs/params/baseline.yaml")
OverlayOption = typer.Option(
    None,
    "--overlay",
    "-o",
    help="Partial params YAML merged over --params, e.g. pipelines/configs/params/baseline.yaml.",
)


@data_app.command("fetch")
def data_fetch(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Download (or copy from a local folder/archive) and verify the raw dataset."""
    from kws.data import fetch

    typer.echo(f"raw data in {fetch(resolve_params(params, set_, overlay))}")


@data_app.command("prepare")
def data_prepare(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Write the speaker-disjoint split manifest (CSV) and the data summary."""
    from kws.data import prepare

    p = resolve_params(params, set_, overlay)
    samples, info = prepare(p)
    counts = {split: sum(c.values()) for split, c in info["counts"].items()}
    typer.echo(f"{len(samples)} samples {counts}, data hash {str(info['data_hash'])[:12]}")


@app.command()
def featurize(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Compute (or reuse cached) log-mel features of the prepared data."""
    from kws.features import run

    fs = run(resolve_params(params, set_, overlay))
    typer.echo(f"features {tuple(fs.x.shape)} ({len(fs.skipped)} files skipped)")


@app.command()
def train(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Train the model configured in params.yaml on the train split."""
    from kws.train import run

    result = run(resolve_params(params, set_, overlay))
    val = result.history.get("val_accuracy")
    typer.echo(
        f"trained {result.model.name} in {result.seconds:.1f}s, best epoch {result.best_epoch}"
        + (f", val accuracy {max(val):.4f}" if val else "")
    )


@app.command()
def evaluate(
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    model: Path | None = typer.Option(None, help="An exported model package to evaluate."),
    data: Path | None = typer.Option(None, help="Folder of WAVs (FSDD or label/*.wav layout)."),
) -> None:
    """Evaluate on the test split, or --model DIR on --data FOLDER (JSON on stdout)."""
    from kws import evaluate as ev

    if (model is None) != (data is None):
        raise ParamsError("--model and --data go together")
    if model is not None and data is not None:
        metrics = ev.evaluate_package(model, data)
        metrics.pop("confusion_matrix")
        typer.echo(json.dumps(metrics, indent=2))
        return
    metrics = ev.run(resolve_params(params, set_, overlay))
    typer.echo(
        f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
        f"(n={metrics['n']})"
    )


@app.command()
def cv(
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    speaker: list[str] = typer.Option(None, help="Only these held-out speakers (repeatable)."),
    output: Path = typer.Option(Path("reports/cv.json"), help="Where to write the results."),
) -> None:
    """Leave-one-speaker-out cross-validation: per-speaker and mean accuracy / macro-F1."""
    from kws.data.manifest import write_json
    from kws.evaluate import cross_validate

    result = cross_validate(resolve_params(params, set_, overlay), speaker or None)
    write_json(result, output)
    typer.echo("speaker       accuracy  macro_f1  train_s")
    for name, fold in result["folds"].items():
        typer.echo(
            f"{name:<12}  {fold['accuracy']:.4f}    {fold['macro_f1']:.4f}    "
            f"{fold['train_seconds']:.0f}"
        )
    typer.echo(f"{'mean':<12}  {result['mean_accuracy']:.4f}    {result['mean_macro_f1']:.4f}")


@app.command()
def export(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Write the model package (TFLite, Keras, labels, features, metadata)."""
    from kws.export import run

    p = resolve_params(params, set_, overlay)
    package, version = run(p)
    typer.echo(f"model package in {package}")
    if version:
        typer.echo(f"registered {p.registry.model_name} version {version} (alias challenger)")


@app.command()
def predict(
    file: Path = typer.Argument(..., help="A WAV file."),
    model: Path = typer.Option(Path("models/package"), help="Model package folder."),
    top_k: int = typer.Option(3, min=1, help="How many classes to list with --json."),
    as_json: bool = typer.Option(False, "--json", help="Print the full prediction as JSON."),
) -> None:
    """Predict the keyword in a WAV file."""
    from kws.inference import Predictor

    prediction = Predictor.from_path(model).predict(file, top_k=top_k)
    if as_json:
        typer.echo(json.dumps(prediction.to_dict(), indent=2))
    else:
        typer.echo(f"{prediction.label}\t{prediction.confidence:.3f}")


@app.command()
def serve(
    model: str = typer.Option(
        "models:/kws@champion",
        envvar="KWS_MODEL_URI",
        help="Package folder, models:/kws@champion, models:/kws/3 or s3://... (env KWS_MODEL_URI).",
    ),
    port: int = typer.Option(8080, envvar="KWS_PORT", help="HTTP port."),
    name: str = typer.Option(
        "kws", envvar="KWS_MODEL_NAME", help="Model name in the V1/V2 routes."
    ),
    max_upload: int = typer.Option(
        1 << 20, envvar="KWS_MAX_UPLOAD_BYTES", min=1024, help="Upload limit of /predict (bytes)."
    ),
    max_seconds: float = typer.Option(
        10.0, envvar="KWS_MAX_SECONDS", min=0.1, help="Longest audio accepted (seconds)."
    ),
    poll: float = typer.Option(
        30.0,
        envvar="KWS_POLL_SECONDS",
        min=0,
        help="Seconds between registry alias checks (0: off).",
    ),
    access_log: bool = typer.Option(
        False, envvar="KWS_ACCESS_LOG", help="Log every request (metrics count them anyway)."
    ),
    threads: int = typer.Option(
        1, envvar="KWS_THREADS", min=1, help="TFLite threads per inference."
    ),
) -> None:
    """Serve a model with KServe's ModelServer: /predict, V1, V2, /metrics (Ctrl-C stops).

    Every option also reads an environment variable; the admin API's token is the variable
    KWS_ADMIN_TOKEN only, never an option (it stays out of process listings).
    """
    from kws.serving.server import ServeSettings
    from kws.serving.server import serve as run_server

    run_server(
        ServeSettings(
            model_uri=model,
            name=name,
            port=port,
            max_upload_bytes=max_upload,
            max_seconds=max_seconds,
            poll_seconds=poll,
            access_log=access_log,
            num_threads=threads,
        )
    )


def _registry(params: Path, set_: list[str] | None, overlay: list[Path] | None) -> Any:
    from kws.registry import Registry

    return Registry(resolve_params(params, set_, overlay).registry.model_name)


@registry_app.command("list")
def registry_list(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Registered versions, newest first, with aliases and test accuracy."""
    reg = _registry(params, set_, overlay)
    versions = reg.versions()
    if not versions:
        typer.echo(f"no versions of {reg.name!r} yet (run `kws export`)")
        return
    typer.echo("version  aliases              accuracy  macro_f1  architecture  created")
    for v in versions:
        typer.echo(
            f"{v.version:<7}  {','.join(v.aliases) or '-':<19}  "
            f"{v.tags.get('accuracy', '-')[:6]:<8}  {v.tags.get('macro_f1', '-')[:6]:<8}  "
            f"{v.tags.get('architecture', '-'):<12}  {v.created}"
        )


@registry_app.command("show")
def registry_show(
    version: str,
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
) -> None:
    """One version: aliases, run, tags; and the champion history."""
    from dataclasses import asdict

    reg = _registry(params, set_, overlay)
    typer.echo(
        json.dumps({**asdict(reg.show(version)), "champion_history": reg.history()}, indent=2)
    )


@registry_app.command("promote")
def registry_promote(
    version: str,
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
) -> None:
    """Point `champion` at VERSION (the previous champion is remembered for rollback)."""
    reg = _registry(params, set_, overlay)
    previous = reg.promote(version)
    typer.echo(f"champion: v{version} (was {'v' + previous if previous else 'none'})")


@registry_app.command("rollback")
def registry_rollback(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Return `champion` to the version it pointed at before the last promotion."""
    reg = _registry(params, set_, overlay)
    current = reg.alias_version("champion")
    typer.echo(f"champion: v{reg.rollback()} (was v{current})")


@registry_app.command("gate")
def registry_gate(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Evaluate challenger and champion on the test split; promote only a better challenger."""
    from kws.data import MANIFEST, read_manifest
    from kws.registry import Registry, gate

    p = resolve_params(params, set_, overlay)
    samples = [s for s in read_manifest(Path(p.paths.prepared) / MANIFEST) if s.split == "test"]
    decision = gate(Registry(p.registry.model_name), samples, p.registry.gate_margin)
    typer.echo(decision.reason)


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
    import shlex

    from kws.experiments import VARIATIONS, markdown_table, run_experiments

    p = resolve_params(params, set_, [baseline, *(overlay or [])])
    rows = run_experiments(p, variation or list(VARIATIONS), workdir)
    command = "kws " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    table = markdown_table(rows, command)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    typer.echo(table)


@app.command()
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
    from kws.data import prepare
    from kws.tune import tune as run_tune

    p = resolve_params(params, set_, overlay)
    # the study's own copy of the prepared data: --set data.* must not touch data/prepared
    p = p.replace(paths={"prepared": str(Path(p.paths.cache) / "tune" / study_name)})
    prepare(p)
    result = run_tune(
        p,
        trials,
        storage,
        study_name,
        f"{p.registry.experiment}-tuning",
        output,
        plots,
        command=_command_line(),
    )
    typer.echo(
        f"study {result.study_name}: {result.n_trials} trials, best trial "
        f"{result.best_trial} val accuracy {result.best_value:.4f} {result.best_params}"
    )
    typer.echo(f"best params overlay: {output} (kws train --overlay {output})")


report_app = typer.Typer(help="Reports over tracked runs.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("compare")
def report_compare(
    storage: str = typer.Option("sqlite:///optuna.db", help="Optuna storage of the study."),
    study_name: str = typer.Option("kws", help="Study whose best trial to include."),
    output: Path = typer.Option(Path("docs/results/comparison.md"), help="Markdown (+ .csv)."),
) -> None:
    """One table of the baseline, the variations and the best Optuna trial."""
    import shlex

    from kws.experiments import comparison_rows, study_commands, write_comparison

    rows = comparison_rows(storage, study_name)
    if not rows:
        raise KwsError("nothing to compare yet: run `kws experiments run` and `kws tune`")
    command = "kws " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    csv_path = write_comparison(rows, output, command, study_commands(storage, study_name))
    typer.echo(output.read_text())
    typer.echo(f"written {output} and {csv_path}")


pipeline_app = typer.Typer(
    help="ZenML training pipeline: data → features → train → evaluate → export → register.",
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")


def _pipelines(module: str) -> Any:
    """A module of the `pipelines` package (imported only here: it imports ZenML)."""
    import importlib

    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")  # offline by default
    try:
        import zenml  # noqa: F401
    except ModuleNotFoundError as exc:
        raise KwsError("the pipeline needs ZenML: pip install -e '.[pipeline]'") from exc
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(handler)  # ZenML's console handler prints the same records
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pipelines" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.append(str(checkout))  # a source checkout whose pipelines/ is not installed
    return importlib.import_module(f"pipelines.{module}")


@pipeline_app.command("run")
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
    result = _pipelines("training").run_pipeline(config, params, set_, overlay)
    typer.echo(f"pipeline run {result.run_name} ({result.run_id}): {result.status}")
    typer.echo(
        f"MLflow run {result.mlflow_run_id}; registered {result.model_name} "
        f"version {result.model_version}"
    )


@pipeline_app.command("stack")
def pipeline_stack(
    name: str = typer.Argument("local", help="local, compose, kind or a stack YAML file."),
    var: list[str] = typer.Option(
        None, "--var", help="NAME=VALUE for a ${NAME} in the stack file (repeatable)."
    ),
    activate: bool = typer.Option(True, help="Make it the active stack."),
) -> None:
    """Create or update a ZenML stack from pipelines/stacks/ (idempotent) and activate it."""
    from kws.tracking import tracking_uri

    stacks = _pipelines("stacks")
    variables = stacks.parse_vars(var)
    variables.setdefault("MLFLOW_TRACKING_URI", tracking_uri())  # the local stack's store
    summary = stacks.apply_stack(name, variables, activate)
    typer.echo(
        f"stack {summary['stack']!r} {summary['action']}{' and active' if activate else ''}: "
        + ", ".join(f"{kind} {', '.join(names)}" for kind, names in summary["components"].items())
    )
    if summary["tracking_uri"]:
        typer.echo(f"MLflow tracking and registry: {summary['tracking_uri']}")


def _command_line() -> str:
    import shlex

    return "kws " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def main() -> None:
    """Entry point: expected errors become one line on stderr and exit code 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("tensorflow", "absl", "h5py", "numba", "matplotlib", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app()
    except KwsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug: keep it to one line unless asked for the traceback
        if os.environ.get("KWS_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (KWS_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
