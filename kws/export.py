"""Export: a trained Keras model converted to TFLite (float32 or quantised) and written as a
model package."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kws.audio import decode
from kws.data.features import FeatureSet
from kws.drift import (
    INPUT_STATISTICS,
    Reference,
    build_reference,
    input_statistics,
    write_reference,
)
from kws.errors import ParamsError
from kws.package import KERAS_FILE, write_package
from kws.params import FeatureParams

REFERENCE_MAX_CLIPS = 2000  # input statistics of at most this many clips (evenly spaced)

if TYPE_CHECKING:
    import keras

# none: float32; float16: float16 weights; dynamic_int8: int8 weights, float activations;
# int8: full integer (weights and activations), float32 input and output
QUANTIZATIONS = ("none", "float16", "dynamic_int8", "int8")


def to_tflite(
    model: keras.Model, quantization: str = "none", representative: np.ndarray | None = None
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer; int8 calibrates its activations on
    representative inputs (n, frames, n_mels), e.g. train-split features."""
    import tensorflow as tf  # heavy: only export converts

    if quantization not in QUANTIZATIONS:
        raise ParamsError(
            f"unknown export.quantization {quantization!r} (choose from {', '.join(QUANTIZATIONS)})"
        )
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative is None or len(representative) == 0:
            raise ParamsError("export.quantization int8 needs representative train-split clips")
        converter.representative_dataset = lambda: _batches_of_one(representative)
        # every op in int8 or the conversion fails (no silent float fallback); the model's
        # input and output stay float32, so packages stay interchangeable for the predictor
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # the converter prints its SavedModel trace, and warns that our float32 input has
        # no quantization statistics: by design, the input stays float
        warnings.filterwarnings("ignore", "Statistics for quantized inputs", UserWarning)
        return bytes(converter.convert())


def _batches_of_one(features: np.ndarray) -> Iterator[list[np.ndarray]]:
    """The converter's representative dataset: one (1, frames, n_mels, 1) input at a time."""
    for item in np.asarray(features, dtype=np.float32):
        yield [item[np.newaxis, ..., np.newaxis]]


def representative_rows(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n rows of x drawn without replacement (all of them when x has fewer), seeded."""
    if n >= len(x):
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))]


def export_package(
    model: keras.Model,
    labels: list[str],
    features: FeatureParams,
    metadata: dict[str, Any],
    out_dir: Path,
    quantization: str = "none",
    representative: np.ndarray | None = None,
    reference: Reference | None = None,
) -> Path:
    """Write the model's package (TFLite + Keras model, labels, features, metadata and the
    drift reference when given); the metadata names the quantization and the clip length the
    graph was built for."""

    def write_extra(folder: Path) -> None:
        model.save(folder / KERAS_FILE)
        if reference is not None:
            write_reference(reference, folder)

    return write_package(
        out_dir,
        to_tflite(model, quantization, representative),
        labels,
        features,
        {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "architecture": model.name,
            "parameters": int(model.count_params()),
            "quantization": quantization,
            "clip_seconds": features.clip_seconds,
            **metadata,
        },
        write_extra=write_extra,
    )


def drift_reference(model: keras.Model, labels: list[str], features: FeatureSet) -> Reference:
    """The drift reference (kws.drift): input statistics of the train and validation clips,
    confidence and predicted labels on the validation split (train if there is none)."""
    inputs_mask = np.isin(features.splits, ("train", "val"))
    paths = features.paths[inputs_mask]
    if len(paths) > REFERENCE_MAX_CLIPS:
        paths = paths[np.linspace(0, len(paths) - 1, REFERENCE_MAX_CLIPS).astype(int)]
    inputs = [input_statistics(*decode(str(path))) for path in paths]
    split = "val" if np.any(features.splits == "val") else "train"
    x, _ = features.split(split)
    probabilities = (
        np.asarray(model.predict(x[..., np.newaxis], verbose=0)) if len(x) else np.zeros((0, 1))
    )
    predicted = [labels[int(np.argmax(p))] for p in probabilities]
    return build_reference(
        inputs,
        [float(np.max(p)) for p in probabilities],
        predicted,
        labels,
        {
            **{
                name: f"{len(inputs)} train+val clips"
                for name in (s.name for s in INPUT_STATISTICS)
            },
            "confidence": f"{len(predicted)} {split} predictions",
            "label": f"{len(predicted)} {split} predictions",
        },
    )
