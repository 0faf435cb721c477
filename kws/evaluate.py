"""Metrics on a split: accuracy, macro-F1, per-class precision/recall, confusion matrix."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kws.data.manifest import Sample, write_json
from kws.errors import DataError
from kws.params import Params

if TYPE_CHECKING:
    from kws.inference import Predictor


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts[true, predicted]."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes present in y_true), per-class scores, confusion matrix."""
    cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), len(labels))
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = actual > 0
    n = int(cm.sum())
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": n,
        "per_class": {
            label: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(actual[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
    }


def plot_confusion_matrix(cm: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> None:
    """Save a confusion-matrix heat map as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 1 + 0.5 * len(labels)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
            fontsize=8,
        )
    ax.set_title("confusion matrix (test split)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training_curves(history: dict[str, list[float]], path: Path) -> None:
    """Save loss and accuracy per epoch as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix in ("", "val_"):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, label=prefix + metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.csv"  # actual,predicted per test clip (dvc plots confusion)


def run(params: Params) -> dict[str, Any]:
    """Evaluate the trained Keras model on the test split; write metrics and the PNG."""
    from kws.features import run as featurize
    from kws.train import encode, load_training

    result = load_training(Path(params.paths.model))
    x_test, y_test = featurize(params).split("test")
    if len(x_test) == 0:
        raise DataError("the test split is empty")
    probs = result.model.predict(x_test[..., np.newaxis], verbose=0)
    metrics = classification_metrics(
        encode(y_test, result.labels), probs.argmax(axis=1), result.labels
    )
    metrics["train_seconds"] = result.seconds
    metrics["best_epoch"] = result.best_epoch
    reports = Path(params.paths.reports)
    plot_confusion_matrix(metrics["confusion_matrix"], result.labels, reports / CONFUSION_FILE)
    write_json(metrics, reports / METRICS_FILE)
    predicted = probs.argmax(axis=1)
    (reports / PREDICTIONS_FILE).write_text(
        "actual,predicted\n"
        + "".join(
            f"{actual},{result.labels[int(p)]}\n"
            for actual, p in zip(y_test, predicted, strict=True)
        )
    )
    log_evaluation(Path(params.paths.model), metrics, reports)
    return metrics


def log_evaluation(model_dir: Path, metrics: dict[str, Any], reports: Path) -> None:
    """Add test metrics and their files to the training's MLflow run."""
    from kws.tracking import load_run

    run = load_run(model_dir)
    if run is None:
        return
    flat = {f"test_{k}": v for k, v in metrics.items() if k in ("accuracy", "macro_f1", "n")}
    for label, scores in metrics["per_class"].items():
        flat.update({f"test_{label}_{k}": v for k, v in scores.items() if k != "support"})
    run.log_metrics(flat)
    for name in (METRICS_FILE, CONFUSION_FILE, PREDICTIONS_FILE):
        run.log_artifact(reports / name, "reports")


def evaluate_package(package_dir: Path, folder: Path) -> dict[str, Any]:
    """Evaluate an exported package (its TFLite model) on any labelled folder of WAVs."""
    from kws.data import scan_labelled_folder
    from kws.inference import Predictor

    return evaluate_samples(Predictor.from_path(package_dir), scan_labelled_folder(folder))


def evaluate_samples(predictor: Predictor, samples: Sequence[Sample]) -> dict[str, Any]:
    """Metrics of a predictor on labelled samples; unreadable files are counted and skipped."""
    from tqdm import tqdm

    from kws.errors import AudioError
    from kws.features import features_of

    unknown = sorted({s.label for s in samples} - set(predictor.labels))
    if unknown:
        raise DataError(f"labels the model does not know: {', '.join(unknown)}")
    index = {label: i for i, label in enumerate(predictor.labels)}
    y_true, y_pred, skipped = [], [], []
    for sample in tqdm(samples, desc="evaluate", unit="file"):
        try:
            feats = features_of(sample.path, predictor.features)
        except AudioError as exc:
            skipped.append(str(exc))
            continue
        y_true.append(index[sample.label])
        y_pred.append(int(predictor.probabilities(feats[np.newaxis])[0].argmax()))
    if not y_true:
        raise DataError("no readable audio to evaluate")
    metrics = classification_metrics(np.array(y_true), np.array(y_pred), predictor.labels)
    metrics["skipped"] = len(skipped)
    return metrics


def cross_validate(params: Params, speakers: Sequence[str] | None = None) -> dict[str, Any]:
    """Leave-one-speaker-out: one model per held-out speaker, trained on all the others.

    Folds have no val split (the held-out speaker is never used for selection), so
    each runs the full training schedule.
    """
    import dataclasses

    from kws.data import prepare
    from kws.features import featurize
    from kws.train import encode, train

    samples, info = prepare(params)
    labels = info["labels"]
    features = featurize(
        samples, params.features, Path(params.paths.cache) / "features", info["data_hash"]
    )
    speaker_of = {s.path: s.speaker for s in samples}
    row_speakers = np.array([speaker_of[p] for p in features.paths])
    folds: dict[str, dict[str, Any]] = {}
    from kws.data.synthetic import is_synthetic

    real = sorted({s for s in row_speakers if not is_synthetic(s)})
    for speaker in speakers or real:
        splits = np.where(row_speakers == speaker, "test", "train")
        fold = dataclasses.replace(features, splits=splits)
        result = train(fold, labels, params, cache_dir=Path(params.paths.cache) / "clips")
        x_test, y_test = fold.split("test")
        probs = result.model.predict(x_test[..., np.newaxis], verbose=0)
        m = classification_metrics(encode(y_test, labels), probs.argmax(axis=1), labels)
        folds[speaker] = {
            "accuracy": round(m["accuracy"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "n": m["n"],
            "train_seconds": round(result.seconds, 1),
            "parameters": int(result.model.count_params()),
        }
        log.info("held-out %s: accuracy %.4f, macro-F1 %.4f", speaker, m["accuracy"], m["macro_f1"])
    accuracies = [f["accuracy"] for f in folds.values()]
    return {
        "folds": folds,
        "mean_accuracy": round(float(np.mean(accuracies)), 4),
        "min_accuracy": round(float(np.min(accuracies)), 4),
        "mean_macro_f1": round(float(np.mean([f["macro_f1"] for f in folds.values()])), 4),
        "params_hash": params.digest(),
    }
