"""Export: a trained Keras model converted to TFLite and written as a model package."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kws.package import KERAS_FILE, write_package
from kws.params import FeatureParams

if TYPE_CHECKING:
    import keras


def to_tflite(model: keras.Model) -> bytes:
    """Convert a Keras model to a float32 TFLite flatbuffer."""
    import tensorflow as tf  # heavy: only export converts

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel trace
        return bytes(converter.convert())


def export_package(
    model: keras.Model,
    labels: list[str],
    features: FeatureParams,
    metadata: dict[str, Any],
    out_dir: Path,
) -> Path:
    """Write the model's package (TFLite + Keras model, labels, features, metadata)."""
    return write_package(
        out_dir,
        to_tflite(model),
        labels,
        features,
        {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "architecture": model.name,
            "parameters": int(model.count_params()),
            **metadata,
        },
        write_extra=lambda folder: model.save(folder / KERAS_FILE),
    )
