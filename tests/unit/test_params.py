"""params.yaml is the single source of truth, and mistakes in it are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kws.errors import ParamsError
from kws.params import Params, load_params, resolve_params
from tests.helpers import REPO


def test_repository_params_load_with_their_values() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "fsdd"
    assert params.features.clip_samples == round(16000 * params.features.clip_seconds)
    assert params.model.architecture == "speech_embedding"
    assert params.flat()["train.epochs"] == params.train.epochs


def test_unknown_key_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ParamsError, match="unknown key.*epoch"):
        load_params(path)


def test_wrong_type_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(ParamsError, match="train.epochs"):
        load_params(path)


def test_set_overrides_a_nested_value_and_rejects_unknown_ones() -> None:
    params = resolve_params(REPO / "params.yaml", ["train.epochs=1", "model.architecture=ds_cnn"])
    assert params.train.epochs == 1 and params.model.architecture == "ds_cnn"
    with pytest.raises(ParamsError, match="unknown parameter"):
        resolve_params(REPO / "params.yaml", ["train.epoks=1"])


def test_digest_changes_with_any_parameter() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.digest() != params.replace(train={"epochs": 2}).digest()


def test_overlay_files_merge_over_params_and_reject_unknown_keys(tmp_path: Path) -> None:
    baseline = resolve_params(
        REPO / "params.yaml", None, [REPO / "pipelines/configs/params/baseline.yaml"]
    )
    assert baseline.model.architecture == "cnn" and not baseline.augment.enabled
    assert baseline.data.source == "fsdd"  # untouched sections keep params.yaml values
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  layers: 3\n")
    with pytest.raises(ParamsError, match="unknown parameter 'layers'"):
        resolve_params(REPO / "params.yaml", None, [bad])


def test_dataclass_defaults_are_the_shipped_params_yaml() -> None:
    # params.yaml is the one source of defaults: the dataclasses may only mirror it
    assert Params() == load_params(REPO / "params.yaml")
