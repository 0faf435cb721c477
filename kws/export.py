"""Model package: TFLite + Keras models, labels, exact feature parameters, metadata."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kws.params import FeatureParams, Params

if TYPE_CHECKING:
    import keras

TFLITE_FILE = "model.tflite"
KERAS_FILE = "model.keras"
LABELS_FILE = "labels.json"
FEATURES_FILE = "features.json"
METADATA_FILE = "metadata.json"
PACKAGE_FILES = (TFLITE_FILE, KERAS_FILE, LABELS_FILE, FEATURES_FILE, METADATA_FILE)


def to_tflite(model: keras.Model) -> bytes:
    """Convert a Keras model to a float32 TFLite flatbuffer."""
    import tensorflow as tf

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
    """Write a complete model package to out_dir, replacing it atomically."""
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tflite = to_tflite(model)
    (staging / TFLITE_FILE).write_bytes(tflite)
    model.save(staging / KERAS_FILE)
    _write_json(staging / LABELS_FILE, labels)
    _write_json(staging / FEATURES_FILE, dataclasses.asdict(features))
    _write_json(
        staging / METADATA_FILE,
        {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "architecture": model.name,
            "parameters": int(model.count_params()),
            "tflite_bytes": len(tflite),
            **metadata,
        },
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.replace(out_dir)
    return out_dir


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def run(params: Params, register_model: bool | None = None) -> tuple[Path, str | None]:
    """Package the trained model into paths.package; log it to MLflow and register it.

    register_model overrides params.registry.register (a pipeline registers in a later
    step). Returns the package folder and the registered version (None when not registered).
    """
    from kws.data import DATA_INFO
    from kws.evaluate import METRICS_FILE
    from kws.provenance import provenance
    from kws.tracking import load_run
    from kws.train import load_training

    model_dir = Path(params.paths.model)
    result = load_training(model_dir)
    info = json.loads((Path(params.paths.prepared) / DATA_INFO).read_text())
    metrics_file = Path(params.paths.reports) / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    summary = {k: metrics[k] for k in ("accuracy", "macro_f1", "n") if k in metrics}
    mlrun = load_run(model_dir)
    metadata = {
        **provenance(info["data_hash"], params.digest()),
        "metrics": summary,
        "speakers": info["speakers"],
        "mlflow_run_id": mlrun.run_id if mlrun else None,
        "params": params.to_dict(),
    }
    package = export_package(
        result.model, result.labels, params.features, metadata, Path(params.paths.package)
    )
    version = None
    if register_model is None:
        register_model = params.registry.register
    if mlrun is not None:
        mlrun.log_artifact(package, "package")
        if register_model:
            version = register_package(params, package)
    return package, version


def register_package(params: Params, package: Path) -> str:
    """Register an exported package as a new version of the model (its run: metadata.json)."""
    from kws.data import MANIFEST, read_manifest
    from kws.errors import DataError
    from kws.tracking import configure

    metadata_file = package / METADATA_FILE
    if not metadata_file.is_file():
        raise DataError(f"no model package in {package} (run `kws export` first)")
    metadata = json.loads(metadata_file.read_text())
    if not metadata.get("mlflow_run_id"):
        raise DataError(f"{package} was not trained in a tracked MLflow run: nothing to register")
    configure()
    example = Path(read_manifest(Path(params.paths.prepared) / MANIFEST)[0].path)
    return register(metadata["mlflow_run_id"], package, example.read_bytes(), params, metadata)


def register(
    run_id: str, package: Path, example_wav: bytes, params: Params, metadata: dict[str, Any]
) -> str:
    """Log the pyfunc model and register a version tagged with its metrics and data."""
    from kws.registry import Registry, log_pyfunc
    from kws.tracking import PIPELINE_RUN_ENV

    model_uri = log_pyfunc(run_id, package, example_wav)
    tags = {
        "data_hash": str(metadata["data_hash"]),
        "git_commit": str(metadata["git_commit"]),
        "params_hash": str(metadata["params_hash"]),
        "architecture": str(metadata.get("architecture", params.model.architecture)),
        **{k: str(v) for k, v in metadata["metrics"].items()},
    }
    if os.environ.get(PIPELINE_RUN_ENV):
        tags["pipeline_run_id"] = os.environ[PIPELINE_RUN_ENV]
    return Registry(params.registry.model_name).register(model_uri, tags)
