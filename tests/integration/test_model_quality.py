"""The generalisation toolkit trains end to end: augmentation, DS-CNN, time-normalised
features, LOSO CV; serving computes exactly the training features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kws.data.features import load_feature_set
from kws.features import features_of
from kws.inference import Predictor
from tests.conftest import TINY, run_kws, run_stages
from tests.helpers import write_params

pytestmark = pytest.mark.slow

IMPROVED = {
    "model": {"architecture": "ds_cnn", "width": 16, "dropout": 0.1},
    "features": {
        "clip_seconds": 1.0,
        "n_mels": 40,
        "center": True,
        "scale": "ln",
        "normalize": "utterance",
        "frames": 40,
        "trim_db": 45.0,
        "fmin": 100.0,
        "fmax": 3400.0,
    },
    "augment": {"enabled": True},
    "train": {"epochs": 2, "batch_size": 16, "lr_schedule": "cosine", "label_smoothing": 0.1},
}


@pytest.fixture(scope="module")
def improved_project(tmp_path_factory: pytest.TempPathFactory, fsdd_dir: Path) -> Path:
    project = tmp_path_factory.mktemp("improved")
    write_params(project, data={**TINY, "fsdd_source": str(fsdd_dir)}, **IMPROVED)
    run_stages(project)
    return project


def test_augmented_ds_cnn_trains_and_exports(improved_project: Path) -> None:
    meta = json.loads((improved_project / "models/package/metadata.json").read_text())
    assert meta["architecture"] == "ds_cnn"
    assert meta["parameters"] < 500_000
    history = json.loads((improved_project / "models/train/history.json").read_text())
    assert len(history["history"]["loss"]) == 2
    features = json.loads((improved_project / "models/package/features.json").read_text())
    assert features["normalize"] == "utterance" and features["frames"] == 40


def test_served_features_equal_training_features(improved_project: Path) -> None:
    training = load_feature_set(improved_project / "data/features/features.npz")
    predictor = Predictor.from_path(improved_project / "models/package")
    served = features_of(improved_project / training.paths[3], predictor.features)
    np.testing.assert_allclose(served, training.x[3], atol=1e-6)


def test_leave_one_speaker_out_reports_each_held_out_speaker(improved_project: Path) -> None:
    out = run_kws(
        improved_project,
        "cv",
        "--speaker",
        "george",
        "--speaker",
        "lucas",
        "--set",
        "train.epochs=1",
        "--output",
        "reports/cv.json",
    )
    result = json.loads((improved_project / "reports/cv.json").read_text())
    assert set(result["folds"]) == {"george", "lucas"}
    for fold in result["folds"].values():
        assert 0 <= fold["accuracy"] <= 1 and fold["n"] > 0
        mistakes = fold["top_confusions"]  # the most frequent (true, predicted) pairs first
        assert all(m["true"] != m["predicted"] for m in mistakes)
        counts = [m["count"] for m in mistakes]
        assert counts == sorted(counts, reverse=True)
        assert sum(counts) <= round((1 - fold["accuracy"]) * fold["n"])
    assert result["mean_accuracy"] == pytest.approx(
        np.mean([f["accuracy"] for f in result["folds"].values()]), abs=1e-4
    )
    assert "george" in out.stdout and "mean" in out.stdout and "most confused" in out.stdout
