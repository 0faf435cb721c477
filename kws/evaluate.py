"""Metrics (accuracy, macro-F1, per-class scores, confusion matrix) and the one `score` of a
model on a split that training, cross-validation, tuning and experiments all use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from kws.data import scan_labelled_folder
from kws.data.features import FeatureSet
from kws.data.manifest import Sample
from kws.errors import AudioError, DataError
from kws.features import features_of
from kws.inference import Predictor
from kws.params import FeatureParams, Params
from kws.train import TrainResult, encode, train

if TYPE_CHECKING:
    import keras


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts[true, predicted]."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def top_confusions(
    cm: Sequence[Sequence[int]], labels: Sequence[str], n: int = 3
) -> list[dict[str, Any]]:
    """The n most frequent mistakes (true label, predicted label, count), most frequent first."""
    counts = np.asarray(cm)
    mistakes = [
        (int(counts[t, p]), t, p)
        for t in range(counts.shape[0])
        for p in range(counts.shape[1])
        if t != p and counts[t, p] > 0
    ]
    mistakes.sort(key=lambda m: (-m[0], m[1], m[2]))
    return [{"true": labels[t], "predicted": labels[p], "count": c} for c, t, p in mistakes[:n]]


def describe_confusions(mistakes: Sequence[dict[str, Any]]) -> str:
    """top_confusions as one line: 'six->three 9, zero->two 5' ('-' if none)."""
    return ", ".join(f"{m['true']}->{m['predicted']} {m['count']}" for m in mistakes) or "-"


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


def score_probabilities(
    probabilities: np.ndarray, true_labels: Sequence[str] | np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Metrics of class probabilities (n, classes) against the true label names."""
    return classification_metrics(
        encode(np.asarray(true_labels), labels), np.asarray(probabilities).argmax(axis=1), labels
    )


def predict_split(model: keras.Model, features: FeatureSet, split: str) -> np.ndarray:
    """Class probabilities of a Keras model on one split's features."""
    x, _ = features.split(split)
    if len(x) == 0:
        raise DataError(f"the {split} split is empty")
    return np.asarray(model.predict(x[..., np.newaxis], verbose=0))


def score(
    model: keras.Model, features: FeatureSet, labels: Sequence[str], split: str = "test"
) -> dict[str, Any]:
    """Metrics of a Keras model on one split."""
    _, y = features.split(split)
    return score_probabilities(predict_split(model, features, split), y, labels)


def score_tflite(
    graph: bytes,
    labels: Sequence[str],
    features: FeatureSet,
    feature_params: FeatureParams,
    split: str = "test",
) -> dict[str, Any]:
    """Metrics of a TFLite model (one thread, as a server process runs it) on one split."""
    x, y = features.split(split)
    if len(x) == 0:
        raise DataError(f"the {split} split is empty")
    predictor = Predictor(graph, list(labels), feature_params, num_threads=1)
    return score_probabilities(predictor.probabilities(x), y, labels)


@dataclass(frozen=True)
class Fitted:
    """A trained model and its metrics on the held-out split."""

    result: TrainResult
    metrics: dict[str, Any]


def fit_and_score(
    features: FeatureSet,
    labels: Sequence[str],
    params: Params,
    callbacks: Sequence[Any] = (),
    cache_dir: Path | None = None,
) -> Fitted:
    """Train on the train split, score on the test split: the unit of cv, tune, experiments."""
    result = train(features, labels, params, callbacks, cache_dir)
    return Fitted(result, score(result.model, features, labels, "test"))


def evaluate_package(package_dir: Path, folder: Path) -> dict[str, Any]:
    """Evaluate an exported package (its TFLite model) on any labelled folder of WAVs."""
    return evaluate_samples(Predictor.from_path(package_dir), scan_labelled_folder(folder))


def evaluate_samples(predictor: Predictor, samples: Sequence[Sample]) -> dict[str, Any]:
    """Metrics of a predictor on labelled samples; unreadable files are counted and skipped."""
    unknown = sorted({s.label for s in samples} - set(predictor.labels))
    if unknown:
        raise DataError(f"labels the model does not know: {', '.join(unknown)}")
    true_labels, probabilities, skipped = [], [], []
    for sample in tqdm(samples, desc="evaluate", unit="file"):
        try:
            feats = features_of(sample.path, predictor.features)
        except AudioError as exc:
            skipped.append(str(exc))
            continue
        true_labels.append(sample.label)
        probabilities.append(predictor.probabilities(feats[np.newaxis])[0])
    if not true_labels:
        raise DataError("no readable audio to evaluate")
    metrics = score_probabilities(np.stack(probabilities), true_labels, predictor.labels)
    metrics["skipped"] = len(skipped)
    return metrics
