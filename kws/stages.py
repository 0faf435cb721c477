"""The lifecycle stages: fetch → prepare → featurize → train → evaluate → export → register.

Each stage reads params and the files earlier stages wrote under `params.paths`, and writes
only its own outputs. The CLI, the DVC stages (through the CLI) and the ZenML steps all call
these functions and nothing around them, so the three stay one pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kws import data, tracking
from kws.data.features import (
    FEATURES_FILE,
    FeatureSet,
    cache_key,
    featurize_samples,
    load_feature_set,
    save_feature_set,
    stored_key,
)
from kws.data.manifest import Sample
from kws.evaluate import predict_split, score_probabilities
from kws.export import drift_reference, export_package, representative_rows
from kws.files import read_json, write_json
from kws.params import Params
from kws.plots import plot_confusion_matrix, plot_training_curves
from kws.pretrained import stack_metadata
from kws.provenance import provenance
from kws.registry import register_package
from kws.train import HISTORY_FILE, TrainResult, load_training, save_training
from kws.train import train as fit

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.csv"  # actual,predicted per test clip (dvc plots confusion)
CURVES_FILE = "training_curves.png"
HISTORY_CSV = "history.csv"


def fetch(params: Params) -> Path:
    """Download (or copy from a local folder/archive) and verify the raw dataset."""
    return data.fetch(params)


def prepare(params: Params) -> tuple[list[Sample], dict[str, Any]]:
    """The speaker-disjoint split manifest and the data summary of the fetched data."""
    return data.prepare(params)


def featurize(params: Params) -> FeatureSet:
    """Features of the prepared manifest in paths.features (reused when nothing changed)."""
    samples, info = data.load_prepared(params)
    out = Path(params.paths.features) / FEATURES_FILE
    key = cache_key(params.features, info["data_hash"])
    if out.is_file() and stored_key(out) == key:
        return load_feature_set(out)
    cache = Path(params.paths.cache) / "features"
    features = featurize_samples(samples, params.features, cache, info["data_hash"])
    save_feature_set(features, out, key)
    return features


def train(
    params: Params,
    callbacks: Sequence[Any] = (),
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train on the featurized data, save the model to paths.model, track it in MLflow."""
    features = load_feature_set(Path(params.paths.features) / FEATURES_FILE)
    info = data.read_info(Path(params.paths.prepared))
    model_dir, reports = Path(params.paths.model), Path(params.paths.reports)
    with tracking.training_run(
        params, info["data_hash"], params.registry.experiment, run_name, tags=tags
    ) as mlrun:
        result = fit(
            features,
            info["labels"],
            params,
            [mlrun.epoch_callback(), *callbacks],
            cache_dir=Path(params.paths.cache) / "clips",
        )
        save_training(result, model_dir)
        tracking.save_run_id(mlrun.run_id, model_dir)
        plot_training_curves(result.history, reports / CURVES_FILE)
        write_history_csv(result.history, reports / HISTORY_CSV)
        mlrun.log_metrics(
            {
                "train_seconds": result.seconds,
                "best_epoch": result.best_epoch,
                "parameters": result.model.count_params(),
            }
        )
        for name in (CURVES_FILE, HISTORY_CSV):
            mlrun.log_artifact(reports / name, "reports")
        mlrun.log_artifact(model_dir / HISTORY_FILE, "reports")
    return result


def evaluate(params: Params) -> dict[str, Any]:
    """Score the trained model on the test split; write metrics, predictions and the PNG."""
    result = load_training(Path(params.paths.model))
    features = load_feature_set(Path(params.paths.features) / FEATURES_FILE)
    probabilities = predict_split(result.model, features, "test")
    _, true_labels = features.split("test")
    metrics = score_probabilities(probabilities, true_labels, result.labels)
    metrics["train_seconds"] = result.seconds
    metrics["best_epoch"] = result.best_epoch
    reports = Path(params.paths.reports)
    plot_confusion_matrix(metrics["confusion_matrix"], result.labels, reports / CONFUSION_FILE)
    write_json(metrics, reports / METRICS_FILE)
    predicted = [result.labels[int(i)] for i in np.argmax(probabilities, axis=1)]
    (reports / PREDICTIONS_FILE).write_text(
        "actual,predicted\n"
        + "".join(f"{a},{p}\n" for a, p in zip(true_labels, predicted, strict=True))
    )
    _log_evaluation(Path(params.paths.model), metrics, reports)
    return metrics


def export(params: Params) -> Path:
    """Package the trained model and its drift reference into paths.package (and into its
    MLflow run)."""
    model_dir = Path(params.paths.model)
    result = load_training(model_dir)
    info = data.read_info(Path(params.paths.prepared))
    metrics = read_json(Path(params.paths.reports) / METRICS_FILE, "run `kws evaluate` first")
    mlrun = tracking.load_run(model_dir)
    metadata = {
        **provenance(info["data_hash"], params.digest()),
        "metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "n") if k in metrics},
        "speakers": info["speakers"],
        "mlflow_run_id": mlrun.run_id if mlrun else None,
        "params": params.to_dict(),
        **stack_metadata(params.model.embedding_stack),
    }
    features = load_feature_set(Path(params.paths.features) / FEATURES_FILE)
    representative = None
    if params.export.quantization == "int8":  # calibrated on train-split clips
        x_train, _ = features.split("train")
        representative = representative_rows(
            x_train, params.export.representative_clips, params.seed
        )
    package = export_package(
        result.model,
        result.labels,
        params.features,
        metadata,
        Path(params.paths.package),
        quantization=params.export.quantization,
        representative=representative,
        reference=drift_reference(result.model, result.labels, features),
    )
    if mlrun is not None:
        mlrun.log_artifact(package, "package")
    return package


def register(params: Params) -> str:
    """Register the exported package as a new version (alias challenger; champion if first)."""
    samples, _ = data.load_prepared(params)
    example = Path(samples[0].path).read_bytes()  # the pyfunc's input example
    return register_package(Path(params.paths.package), params.registry.model_name, example)


def write_history_csv(history: dict[str, list[float]], path: Path) -> None:
    """Per-epoch metrics as CSV (epoch, loss, accuracy, ...) for `dvc plots`."""
    keys = sorted(history)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [",".join(["epoch", *keys])]
    for epoch in range(len(history[keys[0]]) if keys else 0):
        rows.append(",".join([str(epoch + 1), *(f"{history[k][epoch]:.6f}" for k in keys)]))
    path.write_text("\n".join(rows) + "\n")


def _log_evaluation(model_dir: Path, metrics: dict[str, Any], reports: Path) -> None:
    """Add test metrics and their files to the training's MLflow run."""
    run = tracking.load_run(model_dir)
    if run is None:
        return
    flat = {f"test_{k}": v for k, v in metrics.items() if k in ("accuracy", "macro_f1", "n")}
    for label, scores in metrics["per_class"].items():
        flat.update({f"test_{label}_{k}": v for k, v in scores.items() if k != "support"})
    run.log_metrics(flat)
    for name in (METRICS_FILE, CONFUSION_FILE, PREDICTIONS_FILE):
        run.log_artifact(reports / name, "reports")
