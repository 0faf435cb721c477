"""Training schedule: the two-phase fine-tuning of the speech embedding's convolutions."""

from __future__ import annotations

import numpy as np
import pytest

from kws.data.features import FeatureSet
from kws.errors import ParamsError
from kws.model import build_model, unfreeze_embedding_convolutions
from kws.params import ModelParams, Params
from kws.pretrained import conv_weights
from kws.train import train

LAST = len(conv_weights()) - 1


def _tiny_features(n: int = 8) -> FeatureSet:
    rng = np.random.default_rng(0)
    return FeatureSet(
        x=rng.uniform(-60, 0, (n, 97, 32)).astype(np.float32),
        labels=np.array(["yes", "no"] * (n // 2)),
        splits=np.array(["train"] * n),
        paths=np.array([f"clip{i}.wav" for i in range(n)]),
        skipped=[],
    )


def _params(lr_scale: float) -> Params:
    return Params().replace(
        augment={"enabled": False},
        model={"fine_tune": 1},
        train={"epochs": 1, "batch_size": 4, "fine_tune_epochs": 1, "fine_tune_lr_scale": lr_scale},
    )


def _conv_kernel(model, n: int) -> np.ndarray:
    return model.get_layer(f"embedding_conv{n}").get_weights()[0]


def test_the_head_trains_first_on_the_frozen_stack() -> None:
    # at a zero fine-tuning rate the convolutions end exactly as published: the first
    # phase (at the full rate) did not touch them
    result = train(_tiny_features(), ["no", "yes"], _params(lr_scale=0.0))
    assert len(result.history["accuracy"]) == 2  # one head epoch, one fine-tuning epoch
    np.testing.assert_array_equal(_conv_kernel(result.model, LAST), conv_weights()[LAST][0])


def test_then_the_last_convolutions_train_at_the_lower_rate() -> None:
    result = train(_tiny_features(), ["no", "yes"], _params(lr_scale=0.1))
    assert not np.array_equal(_conv_kernel(result.model, LAST), conv_weights()[LAST][0])
    np.testing.assert_array_equal(_conv_kernel(result.model, LAST - 1), conv_weights()[LAST - 1][0])


def test_unfreezing_counts_the_convolutions_and_refuses_other_models() -> None:
    x = np.full((2, 97, 32), 50.0, dtype=np.float32)
    model = build_model(ModelParams("speech_embedding", 0.1, 64), (97, 32), 10, x)
    assert unfreeze_embedding_convolutions(model, 2) == LAST + 1
    assert [layer.trainable for layer in model.layers if "embedding_conv" in layer.name][-3:] == [
        False,
        True,
        True,
    ]
    ds_cnn = build_model(ModelParams("ds_cnn", 0.1, 8), (49, 10), 3, np.zeros((2, 49, 10)))
    with pytest.raises(ParamsError, match="speech_embedding"):
        unfreeze_embedding_convolutions(ds_cnn, 1)


def test_attention_pooling_weighs_the_windows_and_survives_save_and_export(tmp_path) -> None:
    from kws.export import to_tflite
    from kws.inference import Predictor
    from kws.model import load_keras_model

    x = np.random.default_rng(0).uniform(-60, 0, (4, 147, 32)).astype(np.float32)
    params = ModelParams("speech_embedding", 0.1, 64, pooling="attention")
    model = build_model(params, (147, 32), 3, x)
    probabilities = model.predict(x[..., None], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "model.keras")
    again = load_keras_model(tmp_path / "model.keras").predict(x[..., None], verbose=0)
    np.testing.assert_allclose(again, probabilities, atol=1e-6)
    graph = Predictor(to_tflite(model), ["a", "b", "c"], Params().features)
    np.testing.assert_allclose(graph.probabilities(x), probabilities, atol=1e-4)


def test_an_unknown_pooling_is_a_params_error() -> None:
    x = np.zeros((2, 97, 32), dtype=np.float32)
    with pytest.raises(ParamsError, match="model.pooling"):
        build_model(ModelParams("speech_embedding", 0.1, 64, pooling="median"), (97, 32), 3, x)
