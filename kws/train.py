"""Fit: seeded training with early stopping, per-epoch history and a progress bar."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kws.augment import augmented_batches
from kws.data.features import FeatureSet, clips_of
from kws.errors import DataError, ParamsError
from kws.model import build_model, load_keras_model, unfreeze_embedding_convolutions
from kws.params import Params, TrainParams

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"


@dataclass
class TrainResult:
    """A trained model with its history and how long it took."""

    model: keras.Model
    labels: list[str]
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    best_epoch: int = 0


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow."""
    import keras

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def encode(labels: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Class indices of label strings; unknown labels are a clear error."""
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(labels.tolist()) - set(index))
    if unknown:
        raise DataError(f"labels not in the label set: {unknown}")
    return np.array([index[label] for label in labels], dtype=np.int64)


def progress_callback(epochs: int) -> Any:
    """A Keras callback drawing one tqdm bar over epochs."""
    import keras
    from tqdm import tqdm

    class EpochBar(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.bar = tqdm(total=epochs, desc="train", unit="epoch")

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            self.bar.set_postfix(
                {k: f"{v:.3f}" for k, v in logs.items() if "acc" in k or k == "loss"}
            )
            self.bar.update(1)

        def on_train_end(self, logs: dict | None = None) -> None:
            self.bar.close()

    return EpochBar()


def train(
    features: FeatureSet,
    labels: Sequence[str],
    params: Params,
    callbacks: Sequence[Any] = (),
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train the configured model on the train split.

    With a val split, early-stop on val accuracy and keep the best weights; without
    one (leave-one-speaker-out folds), run the full schedule.
    """

    set_seed(params.seed)
    t = params.train
    x_train, y_train = features.split("train")
    x_val, y_val = features.split("val")
    if len(x_train) == 0:
        raise DataError("the train split is empty")
    two_phase = t.fine_tune_epochs > 0 and params.model.fine_tune > 0
    # two phases: the head learns on the frozen stack first, so the convolutions are only
    # fine-tuned (at a lower rate) once the gradients reaching them make sense
    first = dataclasses.replace(params.model, fine_tune=0) if two_phase else params.model
    model = build_model(first, x_train.shape[1:3], len(labels), x_train)
    y_train_1h = _one_hot(encode(y_train, labels), len(labels))
    if params.augment.enabled:
        clips = clips_of(
            list(features.paths[features.splits == "train"]), params.features, cache_dir
        )
        data: Any = augmented_batches(clips, y_train_1h, params, t.batch_size)
        fit_args: dict[str, Any] = {}
        steps = len(data)
    else:
        data = x_train[..., np.newaxis]
        fit_args = {"y": y_train_1h, "batch_size": t.batch_size, "shuffle": True}
        steps = int(np.ceil(len(x_train) / t.batch_size))
    if len(x_val):
        fit_args["validation_data"] = (
            x_val[..., np.newaxis],
            _one_hot(encode(y_val, labels), len(labels)),
        )
    start = time.perf_counter()
    try:
        history = _fit(model, data, t, t.learning_rate, t.epochs, steps, callbacks, fit_args)
        if two_phase:
            unfreeze_embedding_convolutions(model, params.model.fine_tune)
            tuned = _fit(
                model,
                data,
                t,
                t.learning_rate * t.fine_tune_lr_scale,
                t.fine_tune_epochs,
                steps,
                callbacks,
                fit_args,
            )
            history = {k: history.get(k, []) + tuned.get(k, []) for k in {**history, **tuned}}
    finally:
        if hasattr(data, "close"):
            data.close()
    monitored = history.get("val_accuracy") or history["accuracy"]
    best = int(np.argmax(monitored)) + 1 if len(x_val) else len(monitored)
    return TrainResult(model, list(labels), history, time.perf_counter() - start, best)


def _fit(
    model: keras.Model,
    data: Any,
    t: TrainParams,
    learning_rate: float,
    epochs: int,
    steps: int,
    callbacks: Sequence[Any],
    fit_args: dict[str, Any],
) -> dict[str, list[float]]:
    """Compile (so changed trainable flags count) and fit for epochs; the history."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_schedule(t, steps, learning_rate, epochs)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing),
        metrics=["accuracy"],
    )
    extra: list[Any] = [progress_callback(epochs), *callbacks]
    if "validation_data" in fit_args:
        extra.insert(
            0,
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=t.early_stopping_patience,
                restore_best_weights=True,
            ),
        )
    fit = model.fit(data, epochs=epochs, callbacks=extra, verbose=0, **fit_args)
    return {k: [float(v) for v in vals] for k, vals in fit.history.items()}


def _one_hot(indices: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[indices]


def learning_rate_schedule(t: TrainParams, steps_per_epoch: int, peak: float, epochs: int) -> Any:
    """The optimiser's learning rate: constant at peak, or cosine decay over epochs to 1%."""
    import keras

    if t.lr_schedule == "constant":
        return peak
    if t.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            peak, decay_steps=max(1, epochs * steps_per_epoch), alpha=0.01
        )
    raise ParamsError(f"unknown train.lr_schedule {t.lr_schedule!r} (constant, cosine)")


def save_training(result: TrainResult, model_dir: Path) -> None:
    """Write the Keras model, history and labels to model_dir."""
    model_dir.mkdir(parents=True, exist_ok=True)
    result.model.save(model_dir / MODEL_FILE)
    (model_dir / HISTORY_FILE).write_text(
        json.dumps(
            {
                "labels": result.labels,
                "history": result.history,
                "train_seconds": round(result.seconds, 2),
                "best_epoch": result.best_epoch,
            },
            indent=2,
        )
        + "\n"
    )


def load_training(model_dir: Path) -> TrainResult:
    """Read back what save_training wrote."""
    model_file, history_file = model_dir / MODEL_FILE, model_dir / HISTORY_FILE
    if not model_file.is_file() or not history_file.is_file():
        raise DataError(f"no trained model in {model_dir} (run `kws train` first)")
    info = json.loads(history_file.read_text())
    model = load_keras_model(model_file)
    return TrainResult(
        model, info["labels"], info["history"], info["train_seconds"], info["best_epoch"]
    )
