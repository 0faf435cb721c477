"""The experiment story: variations of the default, their changes, the search space, the table."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
import yaml

from kws.errors import ParamsError
from kws.experiments import (
    BASELINE,
    DEFAULT,
    VARIATIONS,
    changed_params,
    resolve_variation,
    write_comparison,
)
from kws.tune import suggest, write_best_params
from tests.helpers import REPO, write_params


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose default has no fine-tuning, int8 weights and noise, rooms and phone
    lines in its augmentation (as params.yaml), whatever params.yaml says when tests run."""
    write_params(
        tmp_path,
        model={"fine_tune": 0},
        export={"quantization": "dynamic_int8"},
        augment={"noise_prob": 0.5, "reverb_prob": 0.25, "telephone_prob": 0.1},
        features={"clip_seconds": 1.5},
    )
    shutil.copytree(REPO / "pipelines/configs/params", tmp_path / "pipelines/configs/params")
    return tmp_path


def changes_of(project: Path, name: str, overrides: list[str] | None = None) -> dict[str, str]:
    params_file = project / "params.yaml"
    default = resolve_variation(params_file, overrides, None, DEFAULT)
    variation = resolve_variation(params_file, overrides, None, name)
    return changed_params(default.flat(), variation.flat())


def test_each_variation_changes_one_thing_of_the_default(project: Path) -> None:
    assert changes_of(project, DEFAULT) == {}
    assert changes_of(project, "float32") == {"export.quantization": "none"}
    assert changes_of(project, "int8_full") == {"export.quantization": "int8"}
    assert changes_of(project, "clip_1.0s") == {"features.clip_seconds": "1.0"}
    assert changes_of(project, "fine_tune_2") == {"model.fine_tune": "2"}
    assert changes_of(project, "clean_augment") == {
        "augment.noise_prob": "0.0",
        "augment.reverb_prob": "0.0",
        "augment.telephone_prob": "0.0",
    }


def test_the_v1_baseline_is_its_overlay_under_the_users_settings(project: Path) -> None:
    changes = changes_of(project, BASELINE, ["train.epochs=1"])
    assert changes["model.architecture"] == "cnn"
    assert "train.epochs" not in changes  # --set wins over baseline.yaml's 15 epochs
    assert changes_of(project, BASELINE)["train.epochs"] == "15"


def test_a_variation_the_default_already_has_changes_nothing(project: Path) -> None:
    assert changes_of(project, "fine_tune_2", ["model.fine_tune=2"]) == {}


def test_an_unknown_variation_is_a_params_error(project: Path) -> None:
    with pytest.raises(ParamsError, match="unknown variation 'n_mels_64'"):
        resolve_variation(project / "params.yaml", None, None, "n_mels_64")


def test_changes_compare_mlflow_strings_with_typed_values_and_skip_bookkeeping() -> None:
    default = {"train.learning_rate": 0.001, "features.clip_seconds": 1.0, "paths.model": "a"}
    logged = {"train.learning_rate": "0.001", "features.clip_seconds": "1", "paths.model": "b"}
    assert changed_params(default, logged) == {}
    assert changed_params(default, {**logged, "train.learning_rate": "0.0031234"}) == {
        "train.learning_rate": "0.003123"
    }


def test_the_search_space_is_the_heads_and_trainings_of_the_default(project: Path) -> None:
    base = resolve_variation(project / "params.yaml", ["train.epochs=10"], None, DEFAULT)
    values = {
        "width": 32,  # every value differs from params.yaml's
        "dropout": 0.3,
        "fine_tune": 2,
        "learning_rate": 0.001,
        "epochs": 15,
        "label_smoothing": 0.05,
    }
    trial = suggest(optuna.trial.FixedTrial(values), base)
    changes = changed_params(base.flat(), trial.flat())
    assert set(changes) == {
        "model.width",
        "model.dropout",
        "model.fine_tune",
        "train.learning_rate",
        "train.epochs",
        "train.label_smoothing",
    }
    with pytest.warns(UserWarning, match="out of the range"):  # epochs: half to 1.5x base
        suggest(optuna.trial.FixedTrial({**values, "epochs": 16}), base)


def test_the_best_params_overlay_holds_only_what_the_search_changed(
    project: Path, tmp_path: Path
) -> None:
    base = resolve_variation(project / "params.yaml", None, None, DEFAULT)
    best = {
        "width": base.model.width,
        "dropout": 0.2,
        "fine_tune": 1,
        "learning_rate": 0.002,
        "epochs": base.train.epochs,
        "label_smoothing": 0.0,
    }
    write_best_params(base, best, tmp_path / "tuned.yaml", "kws", 3)
    overlay = yaml.safe_load((tmp_path / "tuned.yaml").read_text())
    assert overlay == {
        "model": {"dropout": 0.2, "fine_tune": 1},
        "train": {"learning_rate": 0.002, "label_smoothing": 0.0},
    }


def row(name: str, **values: object) -> dict[str, object]:
    return {
        "run": name,
        "changes": "",
        "test_accuracy_tflite": 0.95,
        "test_macro_f1_tflite": 0.94,
        "test_accuracy_keras": 0.96,
        "train_seconds": 80.0,
        "weights_from": "",
        "model_mb": 0.393,
        "quantization": "dynamic_int8",
        "mlflow_run": "f" * 32,
        "command": "kws experiments run",
        "data_hash": "ab" * 32,
        **values,
    }


def test_the_comparison_says_what_it_scored_and_which_commands_made_it(tmp_path: Path) -> None:
    rows = [
        row(DEFAULT),
        row("float32", changes="export.quantization=none", weights_from=DEFAULT, model_mb=1.39),
        row("optuna best (trial 3)", changes="model.width=128", command="kws tune --trials 8"),
    ]
    (tmp_path / "optuna_history.png").write_bytes(b"png")
    write_comparison(
        rows, tmp_path / "comparison.md", "kws report compare", ["kws tune --trials 8"]
    )
    text = (tmp_path / "comparison.md").read_text()
    assert "| test accuracy (TFLite) |" in text and "| test accuracy (Keras) |" in text
    assert "| float32 | export.quantization=none |" in text
    assert "80.0 (weights of v2_default)" in text
    assert f"`{'f' * 32}`" in text  # the whole run id, searchable in MLflow
    assert "data hash `abababababab`" in text
    assert text.count("`kws tune --trials 8`") == 1 and "- `kws experiments run`" in text
    assert "![optuna_history.png](optuna_history.png)" in text
    assert "optuna_importance.png" not in text  # only plots that exist
    header = (tmp_path / "comparison.csv").read_text().splitlines()[0]
    assert header.startswith("run,changes,test_accuracy_tflite")


def test_every_variation_is_named_in_the_table_order() -> None:
    assert list(VARIATIONS)[:2] == [BASELINE, DEFAULT]
