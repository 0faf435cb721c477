"""End to end on the FSDD mirror: the real CLI trains, exports and predicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kws.data import read_manifest
from kws.data.features import load_feature_set
from kws.features import features_of
from kws.inference import Predictor
from kws.model import load_keras_model
from kws.params import load_params
from tests.conftest import run_kws
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_pipeline_writes_every_artefact(tiny_project: Path) -> None:
    expected = [
        "data/prepared/manifest.csv",
        "data/prepared/data_info.json",
        "data/features/features.npz",
        "models/train/model.keras",
        "models/train/history.json",
        "reports/metrics.json",
        "reports/confusion_matrix.png",
        "reports/training_curves.png",
        "models/package/model.tflite",
        "models/package/model.keras",
        "models/package/labels.json",
        "models/package/features.json",
        "models/package/metadata.json",
    ]
    missing = [p for p in expected if not (tiny_project / p).is_file()]
    assert not missing
    metrics = json.loads((tiny_project / "reports/metrics.json").read_text())
    assert {"accuracy", "macro_f1", "n", "per_class", "confusion_matrix"} <= set(metrics)
    meta = json.loads((tiny_project / "models/package/metadata.json").read_text())
    info = json.loads((tiny_project / "data/prepared/data_info.json").read_text())
    assert meta["data_hash"] == info["data_hash"]
    assert len(meta["git_commit"]) in (40, 7) or meta["git_commit"] == "unknown"
    assert meta["metrics"]["accuracy"] == metrics["accuracy"]
    history = json.loads((tiny_project / "models/train/history.json").read_text())
    assert len(history["history"]["val_accuracy"]) == 1


def test_features_the_predictor_computes_equal_the_training_features(tiny_project: Path) -> None:
    training = load_feature_set(tiny_project / "data/features/features.npz")
    predictor = Predictor.from_path(tiny_project / "models/package")
    for i in (0, len(training.paths) // 2, len(training.paths) - 1):
        served = features_of((tiny_project / training.paths[i]).read_bytes(), predictor.features)
        # Same code, same float32 numbers, but training featurizes a batch and serving one
        # clip: the FFT and mel matmul sum in another order (batch size, SIMD path), so a
        # few values differ by ~1e-7 relative on some CPUs (AVX2 without AVX-512). 1e-5
        # relative (a thousandth of a dB) is far below anything that changes a prediction;
        # a wrong front end (window, mels, floor) is off by whole dBs.
        np.testing.assert_allclose(served, training.x[i], rtol=1e-5, atol=1e-5)


# how far a package's TFLite probabilities may be from its Keras model's, by quantization
# Largest |Keras - TFLite| of any class probability. Dynamic-range int8 moves uncertain clips
# most: the shipped model measured max 0.062, median 0.004 per clip over 250 training clips.
TFLITE_TOLERANCE = {"none": 1e-4, "float16": 1e-2, "dynamic_int8": 1e-1, "int8": 1e-1}


def test_tflite_probabilities_equal_keras_within_the_quantization_error(
    tiny_project: Path,
) -> None:
    training = load_feature_set(tiny_project / "data/features/features.npz")
    x = training.x[:16]
    model = load_keras_model(tiny_project / "models/package/model.keras")
    keras_probs = model.predict(x[..., np.newaxis], verbose=0)
    predictor = Predictor.from_path(tiny_project / "models/package")
    tflite_probs = predictor.probabilities(x)
    tolerance = TFLITE_TOLERANCE[predictor.metadata["quantization"]]
    per_clip = np.abs(keras_probs - tflite_probs).max(axis=1)
    assert per_clip.max() < tolerance
    assert np.median(per_clip) < tolerance / 4  # most clips move far less than the worst


def test_predictor_accepts_bytes_paths_and_waveforms(tiny_project: Path) -> None:
    predictor = Predictor.from_path(tiny_project / "models/package")
    sample = read_manifest(tiny_project / "data/prepared/manifest.csv")[0]
    path = tiny_project / sample.path
    from_path = predictor.predict(path)
    from_bytes = predictor.predict(path.read_bytes())
    import soundfile as sf

    wave, rate = sf.read(path, dtype="float32")
    from_wave = predictor.predict(wave, sample_rate=rate)
    assert from_path == from_bytes
    assert from_wave.label == from_path.label
    assert abs(from_wave.confidence - from_path.confidence) < 1e-6
    top3 = from_path.top_k(3)
    assert len(top3) == 3 and top3[0]["label"] == from_path.label
    assert set(from_path.probabilities) == set(predictor.labels)
    assert abs(sum(from_path.probabilities.values()) - 1) < 1e-4
    assert from_path.label in predictor.labels and 0 < from_path.confidence <= 1


def test_kws_predict_prints_label_and_confidence(tiny_project: Path) -> None:
    sample = read_manifest(tiny_project / "data/prepared/manifest.csv")[0]
    out = run_kws(tiny_project, "predict", sample.path).stdout.strip()
    label, confidence = out.split("\t")
    assert label in json.loads((tiny_project / "models/package/labels.json").read_text())
    assert 0 < float(confidence) <= 1


@pytest.mark.parametrize("bad", ["README.md", "params.yaml", "missing.wav"])
def test_kws_predict_on_a_non_audio_file_is_one_error_line(tiny_project: Path, bad: str) -> None:
    (tiny_project / "README.md").write_text("# not audio\n")
    proc = run_kws(tiny_project, "predict", bad, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_kws_evaluate_a_package_on_any_folder_prints_json(
    tiny_project: Path, fsdd_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "speaker"
    folder.mkdir()
    for path in sorted((fsdd_dir / "recordings").glob("*_lucas_1*.wav")):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "9_lucas_99.wav").write_bytes(b"corrupt")
    out = run_kws(tiny_project, "evaluate", "--model", "models/package", "--data", str(folder))
    metrics = json.loads(out.stdout)
    assert metrics["n"] == 110 and metrics["skipped"] == 1
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    assert set(metrics["per_class"]) == set(
        json.loads((tiny_project / "models/package/labels.json").read_text())
    )


def test_kws_evaluate_with_a_missing_package_is_one_error_line(
    tiny_project: Path, tmp_path: Path
) -> None:
    proc = run_kws(
        tiny_project, "evaluate", "--model", str(tmp_path), "--data", str(tmp_path), check=False
    )
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error: ")
    assert "not a model package" in proc.stderr


def test_featurize_reuses_its_cache(tiny_project: Path) -> None:
    proc = run_kws(tiny_project, "featurize")
    assert "features" in proc.stdout and "features:" not in proc.stderr  # no progress bar: cached


def test_export_writes_the_quantized_graph_the_params_choose(
    tiny_project: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(tiny_project, project)
    shipped = load_params(REPO / "params.yaml")
    shipped_meta = json.loads((project / "models/package/metadata.json").read_text())
    assert shipped_meta["quantization"] == shipped.export.quantization
    assert shipped_meta["clip_seconds"] == shipped.features.clip_seconds
    package = project / "models/package"
    run_kws(project, "export", "--no-register", "--set", "export.quantization=none")
    original = Predictor.from_path(package)  # float32; the graph is read into memory
    run_kws(project, "export", "--no-register", "--set", "export.quantization=int8")
    quantized = Predictor.from_path(package)
    assert original.metadata["quantization"] == "none"
    assert quantized.metadata["quantization"] == "int8"
    assert quantized.metadata["tflite_bytes"] < original.metadata["tflite_bytes"] / 3
    clips = [project / s.path for s in read_manifest(project / "data/prepared/manifest.csv")[:8]]
    agree = [quantized.predict(c).label == original.predict(c).label for c in clips]
    assert sum(agree) >= 7  # full-integer arithmetic may flip a near tie, not the model


def test_an_unknown_quantization_is_one_error_line(tiny_project: Path) -> None:
    proc = run_kws(
        tiny_project, "export", "--no-register", "--set", "export.quantization=int4", check=False
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown export.quantization")
