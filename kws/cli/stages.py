"""Stage commands: data fetch/prepare, featurize, train, evaluate, export, register, cv, predict."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from kws.cli.options import OverlayOption, ParamsOption, SetOption, load
from kws.errors import ParamsError

data_app = typer.Typer(help="Fetch and prepare datasets.", no_args_is_help=True)


@data_app.command("fetch")
def data_fetch(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Download (or copy from a local folder/archive) and verify the raw dataset."""
    from kws import stages  # TensorFlow + MLflow: loaded when run

    typer.echo(f"raw data in {stages.fetch(load(params, set_, overlay))}")


@data_app.command("prepare")
def data_prepare(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Write the speaker-disjoint split manifest (CSV) and the data summary."""
    from kws import stages  # TensorFlow + MLflow: loaded when run

    samples, info = stages.prepare(load(params, set_, overlay))
    counts = {split: sum(c.values()) for split, c in info["counts"].items()}
    typer.echo(f"{len(samples)} samples {counts}, data hash {str(info['data_hash'])[:12]}")


def featurize(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Compute (or reuse cached) log-mel features of the prepared data."""
    from kws import stages  # TensorFlow + MLflow: loaded when run

    features = stages.featurize(load(params, set_, overlay))
    typer.echo(f"features {tuple(features.x.shape)} ({len(features.skipped)} files skipped)")


def train(
    params: Path = ParamsOption, set_: list[str] = SetOption, overlay: list[Path] = OverlayOption
) -> None:
    """Train the model configured in params.yaml on the train split."""
    from kws import stages  # TensorFlow + MLflow: loaded when run

    result = stages.train(load(params, set_, overlay))
    val = result.history.get("val_accuracy")
    typer.echo(
        f"trained {result.model.name} in {result.seconds:.1f}s, best epoch {result.best_epoch}"
        + (f", val accuracy {max(val):.4f}" if val else "")
    )


def evaluate(
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    model: Path | None = typer.Option(None, help="An exported model package to evaluate."),
    data: Path | None = typer.Option(None, help="Folder of WAVs (FSDD or label/*.wav layout)."),
) -> None:
    """Evaluate on the test split, or --model DIR on --data FOLDER (JSON on stdout)."""
    if (model is None) != (data is None):
        raise ParamsError("--model and --data go together")
    if model is not None and data is not None:
        from kws.evaluate import evaluate_package  # loaded when run

        metrics = evaluate_package(model, data)
        metrics.pop("confusion_matrix")
        typer.echo(json.dumps(metrics, indent=2))
        return
    from kws import stages  # TensorFlow + MLflow: loaded when run

    metrics = stages.evaluate(load(params, set_, overlay))
    typer.echo(
        f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
        f"(n={metrics['n']})"
    )


def export(
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    register: bool | None = typer.Option(
        None, help="Register the package as a new version (default: registry.register)."
    ),
) -> None:
    """Write the model package (TFLite, Keras, labels, features, metadata); register it."""
    from kws import stages  # TensorFlow + MLflow: loaded when run

    p = load(params, set_, overlay)
    typer.echo(f"model package in {stages.export(p)}")
    if p.registry.register if register is None else register:
        version = stages.register(p)
        typer.echo(f"registered {p.registry.model_name} version {version} (alias challenger)")


def cv(
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    overlay: list[Path] = OverlayOption,
    speaker: list[str] = typer.Option(None, help="Only these held-out speakers (repeatable)."),
    output: Path = typer.Option(Path("reports/cv.json"), help="Where to write the results."),
) -> None:
    """Leave-one-speaker-out cross-validation: per-speaker and mean accuracy / macro-F1."""
    from kws.cv import cross_validate  # TensorFlow: loaded when run
    from kws.evaluate import describe_confusions  # TensorFlow too
    from kws.files import write_json  # beside the heavy import above

    result = cross_validate(load(params, set_, overlay), speaker or None)
    write_json(result, output)
    typer.echo("speaker       accuracy  macro_f1  train_s  most confused (true->predicted count)")
    for name, fold in result["folds"].items():
        typer.echo(
            f"{name:<12}  {fold['accuracy']:.4f}    {fold['macro_f1']:.4f}    "
            f"{fold['train_seconds']:<7.0f}  {describe_confusions(fold['top_confusions'])}"
        )
    typer.echo(f"{'mean':<12}  {result['mean_accuracy']:.4f}    {result['mean_macro_f1']:.4f}")


def predict(
    file: Path = typer.Argument(..., help="A WAV file."),
    model: Path = typer.Option(Path("models/package"), help="Model package folder."),
    top_k: int = typer.Option(3, min=1, help="How many classes to list with --json."),
    as_json: bool = typer.Option(False, "--json", help="Print the full prediction as JSON."),
) -> None:
    """Predict the keyword in a WAV file."""
    from kws.inference import Predictor  # the TFLite runtime: loaded when run

    prediction = Predictor.from_path(model).predict(file)
    if as_json:
        typer.echo(json.dumps(prediction.to_dict(top_k), indent=2))
    else:
        typer.echo(f"{prediction.label}\t{prediction.confidence:.3f}")


COMMANDS = (featurize, train, evaluate, export, cv, predict)
