"""Export: a trained Keras model converted to TFLite and written as a model package."""

from __future__ import annotations

import contextlib
import io
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
from kws.package import KERAS_FILE, write_package
from kws.params import FeatureParams

REFERENCE_MAX_CLIPS = 2000  # input statistics of at most this many clips (evenly spaced)

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
    reference: Reference | None = None,
) -> Path:
    """Write the model's package (TFLite + Keras model, labels, features, metadata and the
    drift reference when given)."""

    def write_extra(folder: Path) -> None:
        model.save(folder / KERAS_FILE)
        if reference is not None:
            write_reference(reference, folder)

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
