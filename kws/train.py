"""Seeded training with early stopping, per-epoch history and a progress bar."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kws.errors import DataError, ParamsError
from kws.features import FeatureSet
from kws.model import build_model, load_keras_model
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
    import keras

    set_seed(params.seed)
    t = params.train
    x_train, y_train = features.split("train")
    x_val, y_val = features.split("val")
    if len(x_train) == 0:
        raise DataError("the train split is empty")
    model = build_model(params.model, x_train.shape[1:3], len(labels), x_train)
    y_train_1h = _one_hot(encode(y_train, labels), len(labels))
    if params.augment.enabled:
        from kws.features import clips_of

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
    model.compile(
        optimizer=keras.optimizers.Adam(_learning_rate(t, steps)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing),
        metrics=["accuracy"],
    )
    extra: list[Any] = [progress_callback(t.epochs), *callbacks]
    if len(x_val):
        fit_args["validation_data"] = (
            x_val[..., np.newaxis],
            _one_hot(encode(y_val, labels), len(labels)),
        )
        extra.insert(
            0,
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=t.early_stopping_patience,
                restore_best_weights=True,
            ),
        )
    start = time.perf_counter()
    try:
        fit = model.fit(data, epochs=t.epochs, callbacks=extra, verbose=0, **fit_args)
    finally:
        if hasattr(data, "close"):
            data.close()
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    monitored = history.get("val_accuracy") or history["accuracy"]
    best = int(np.argmax(monitored)) + 1 if len(x_val) else len(monitored)
    return TrainResult(model, list(labels), history, time.perf_counter() - start, best)


def _one_hot(indices: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[indices]


def _learning_rate(t: TrainParams, steps_per_epoch: int) -> Any:
    import keras

    if t.lr_schedule == "constant":
        return t.learning_rate
    if t.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            t.learning_rate, decay_steps=max(1, t.epochs * steps_per_epoch), alpha=0.01
        )
    raise ParamsError(f"unknown train.lr_schedule {t.lr_schedule!r} (constant, cosine)")


def background_noise(params: Params) -> list[np.ndarray]:
    """Speech Commands' _background_noise_ recordings (16 kHz mono), when the data has them."""
    from kws.audio import decode, resample

    folder = Path(params.paths.raw) / "speech_commands" / "_background_noise_"
    noises = []
    for path in sorted(folder.glob("*.wav")) if params.data.source == "speech_commands" else []:
        wave, rate = decode(path)
        noises.append(resample(wave, rate, params.features.sample_rate))
    return noises


def _augmented_batches_class() -> type:
    import keras

    from kws.augment import Augmenter
    from kws.features import log_mel_batch

    class _AugmentedBatches(keras.utils.PyDataset):
        """Batches of freshly augmented features; new perturbations every epoch."""

        def __init__(self, clips: np.ndarray, y: np.ndarray, params: Params, batch_size: int):
            super().__init__()
            self.clips, self.y, self.batch_size = clips, y, batch_size
            self.mixup, self.seed, self.epoch = params.train.mixup, params.seed, 0
            self.fp = params.features
            self.augmenter = Augmenter(params.augment, params.seed, background_noise(params))
            self.rng = np.random.default_rng(params.seed + 1)
            self.x, self.order = self._make_epoch()
            # the next epoch is augmented in a thread while Keras trains on this one;
            # epochs are still made one after the other, so runs stay reproducible
            self._pool = ThreadPoolExecutor(max_workers=1)
            self._next = self._pool.submit(self._make_epoch)

        def _make_epoch(self) -> tuple[np.ndarray, np.ndarray]:
            aug, rate = self.augmenter, self.fp.sample_rate
            waves = np.stack([aug.waveform(clip, rate) for clip in self.clips])
            feats = log_mel_batch(waves, self.fp)
            x = np.stack([aug.spectrogram(f) for f in feats])[..., np.newaxis]
            return x, self.rng.permutation(len(self.clips))

        def close(self) -> None:
            """Stop preparing epochs nobody will train on."""
            self._next.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)

        def __len__(self) -> int:
            return int(np.ceil(len(self.clips) / self.batch_size))

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            if self.mixup <= 0:
                return self.x[rows], self.y[rows]
            return mix(self.x[rows], self.y[rows], self.mixup, self._mix_rng(index))

        def _mix_rng(self, index: int) -> np.random.Generator:
            return np.random.default_rng([self.seed, self.epoch, index])

        def on_epoch_end(self) -> None:
            self.x, self.order = self._next.result()
            self.epoch += 1
            self._next = self._pool.submit(self._make_epoch)

    return _AugmentedBatches


def mix(
    x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Mixup: each example blended with another of the batch, labels blended alike."""
    weight = rng.beta(alpha, alpha, size=len(x)).astype(np.float32)
    weight = np.maximum(weight, 1 - weight)  # the first example stays the main one
    partner = rng.permutation(len(x))
    wx = weight.reshape(-1, *([1] * (x.ndim - 1)))
    return wx * x + (1 - wx) * x[partner], weight[:, None] * y + (1 - weight[:, None]) * y[partner]


def augmented_batches(clips: np.ndarray, y: np.ndarray, params: Params, batch_size: int) -> Any:
    """A Keras PyDataset of augmented training batches (keras imported lazily)."""
    return _augmented_batches_class()(clips, y, params, batch_size)


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


def run(params: Params, callbacks: Sequence[Any] = (), run_name: str | None = None) -> TrainResult:
    """Train on the prepared data, save the model to paths.model, track it in MLflow."""
    from kws import tracking
    from kws.data import DATA_INFO
    from kws.evaluate import plot_training_curves
    from kws.features import run as featurize

    features = featurize(params)
    info = json.loads((Path(params.paths.prepared) / DATA_INFO).read_text())
    model_dir, reports = Path(params.paths.model), Path(params.paths.reports)
    with tracking.training_run(
        params, info["data_hash"], params.registry.experiment, run_name
    ) as mlrun:
        result = train(
            features,
            info["labels"],
            params,
            [mlrun.epoch_callback(), *callbacks],
            cache_dir=Path(params.paths.cache) / "clips",
        )
        save_training(result, model_dir)
        tracking.save_run_id(mlrun.run_id, model_dir)
        plot_training_curves(result.history, reports / "training_curves.png")
        write_history_csv(result.history, reports / "history.csv")
        mlrun.log_metrics(
            {
                "train_seconds": result.seconds,
                "best_epoch": result.best_epoch,
                "parameters": result.model.count_params(),
            }
        )
        for name in ("training_curves.png", "history.csv"):
            mlrun.log_artifact(reports / name, "reports")
        mlrun.log_artifact(model_dir / HISTORY_FILE, "reports")
    return result


def write_history_csv(history: dict[str, list[float]], path: Path) -> None:
    """Per-epoch metrics as CSV (epoch, loss, accuracy, ...) for `dvc plots`."""
    keys = sorted(history)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [",".join(["epoch", *keys])]
    for epoch in range(len(history[keys[0]]) if keys else 0):
        rows.append(",".join([str(epoch + 1), *(f"{history[k][epoch]:.6f}" for k in keys)]))
    path.write_text("\n".join(rows) + "\n")
