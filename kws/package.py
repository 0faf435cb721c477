"""The model package format: one folder holding the TFLite model, labels, the exact feature
parameters and metadata. Written by kws.export, read by kws.inference (no TensorFlow)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kws.errors import ModelPackageError
from kws.files import write_json
from kws.params import FeatureParams

TFLITE_FILE = "model.tflite"
KERAS_FILE = "model.keras"
LABELS_FILE = "labels.json"
FEATURES_FILE = "features.json"
METADATA_FILE = "metadata.json"
REFERENCE_FILE = "reference.json"  # optional: the drift reference (kws.drift), since issue 19
REQUIRED_FILES = (TFLITE_FILE, LABELS_FILE, FEATURES_FILE)
PACKAGE_FILES = (
    TFLITE_FILE,
    KERAS_FILE,
    LABELS_FILE,
    FEATURES_FILE,
    METADATA_FILE,
    REFERENCE_FILE,
)


@dataclass(frozen=True)
class Package:
    """What a predictor needs from a package folder."""

    model_bytes: bytes
    labels: list[str]
    features: FeatureParams
    metadata: dict[str, Any]


def is_package(folder: Path) -> bool:
    """Whether folder holds the files every package has."""
    return folder.is_dir() and all((folder / name).is_file() for name in REQUIRED_FILES)


def read_package(folder: str | Path) -> Package:
    """Read a package folder; a missing file or malformed JSON is a ModelPackageError."""
    root = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if not root.is_dir() or missing:
        raise ModelPackageError(
            f"{root} is not a model package (missing: {', '.join(missing) or 'folder'})"
        )
    try:
        labels = json.loads((root / LABELS_FILE).read_text())
        features = FeatureParams(**json.loads((root / FEATURES_FILE).read_text()))
        metadata = read_metadata(root)
    except (ValueError, TypeError) as exc:
        raise ModelPackageError(f"{root}: malformed package metadata ({exc})") from exc
    return Package((root / TFLITE_FILE).read_bytes(), labels, features, metadata)


def read_metadata(folder: Path) -> dict[str, Any]:
    """metadata.json of a package ({} when absent)."""
    path = folder / METADATA_FILE
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def write_package(
    out_dir: Path,
    tflite: bytes,
    labels: list[str],
    features: FeatureParams,
    metadata: dict[str, Any],
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a complete package to out_dir, replacing it atomically (write_extra adds files)."""
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / TFLITE_FILE).write_bytes(tflite)
    if write_extra is not None:
        write_extra(staging)
    write_json(labels, staging / LABELS_FILE)
    write_json(dataclasses.asdict(features), staging / FEATURES_FILE)
    write_json({"tflite_bytes": len(tflite), **metadata}, staging / METADATA_FILE)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.replace(out_dir)
    return out_dir
