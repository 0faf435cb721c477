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

from kws.errors import ParamsError
from kws.package import KERAS_FILE, write_package
from kws.params import FeatureParams

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
) -> Path:
    """Write the model's package (TFLite + Keras model, labels, features, metadata); the
    metadata names the quantization and the clip length the graph was built for."""
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
        write_extra=lambda folder: model.save(folder / KERAS_FILE),
    )
