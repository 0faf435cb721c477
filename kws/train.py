"""Seeded training with early stopping, per-epoch history and a progress bar."""

from __future__ import annotations

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

from kws.errors import DataError
from kws.features import FeatureSet
from kws.model import build_model
from kws.params import Params

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
    features: FeatureSet, labels: Sequence[str], params: Params, callbacks: Sequence[Any] = ()
) -> TrainResult:
    """Train the configured model on the train split, early-stopping on the val split."""
    import keras

    set_seed(params.seed)
    x_train, y_train = features.split("train")
    x_val, y_val = features.split("val")
    if len(x_train) == 0 or len(x_val) == 0:
        raise DataError(
            f"need train and val samples, got {len(x_train)} train and {len(x_val)} val"
        )
    model = build_model(params.model, x_train.shape[1:3], len(labels), x_train)
    model.compile(
        optimizer=keras.optimizers.Adam(params.train.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    t = params.train
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=t.early_stopping_patience, restore_best_weights=True
    )
    start = time.perf_counter()
    fit = model.fit(
        x_train[..., np.newaxis],
        encode(y_train, labels),
        validation_data=(x_val[..., np.newaxis], encode(y_val, labels)),
        epochs=t.epochs,
        batch_size=t.batch_size,
        callbacks=[stop, progress_callback(t.epochs), *callbacks],
        verbose=0,
    )
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    best = int(np.argmax(history["val_accuracy"])) + 1
    return TrainResult(model, list(labels), history, time.perf_counter() - start, best)


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
    import keras

    model_file, history_file = model_dir / MODEL_FILE, model_dir / HISTORY_FILE
    if not model_file.is_file() or not history_file.is_file():
        raise DataError(f"no trained model in {model_dir} (run `kws train` first)")
    info = json.loads(history_file.read_text())
    model = keras.models.load_model(model_file)
    return TrainResult(
        model, info["labels"], info["history"], info["train_seconds"], info["best_epoch"]
    )


def run(params: Params, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train on the prepared data and save the model to paths.model."""
    from kws.data import DATA_INFO
    from kws.evaluate import plot_training_curves
    from kws.features import run as featurize

    features = featurize(params)
    info = json.loads((Path(params.paths.prepared) / DATA_INFO).read_text())
    result = train(features, info["labels"], params, callbacks)
    save_training(result, Path(params.paths.model))
    plot_training_curves(result.history, Path(params.paths.reports) / "training_curves.png")
    return result
