"""Architectures: each builds for its input size, the improved ones stay small, reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kws.errors import ParamsError
from kws.model import build_model
from kws.params import ModelParams


@pytest.mark.parametrize(
    ("architecture", "width", "shape"),
    [("cnn", 64, (101, 40)), ("ds_cnn", 64, (40, 40)), ("bc_resnet", 16, (40, 40))],
)
def test_architecture_gives_class_probabilities(
    architecture: str, width: int, shape: tuple[int, int]
) -> None:
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    model = build_model(ModelParams(architecture, 0.1, width), shape, 10, x)
    probs = model.predict(x[..., np.newaxis], verbose=0)
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    if architecture != "cnn":  # the v1 tutorial CNN is the baseline, 1.6M parameters
        assert model.count_params() < 500_000


def test_bc_resnet_reloads_from_a_keras_file(tmp_path: Path) -> None:
    import keras

    x = np.random.default_rng(1).standard_normal((2, 40, 40)).astype(np.float32)
    model = build_model(ModelParams("bc_resnet", 0.1, 8), (40, 40), 10, x)
    model.save(tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")  # no unsafe Lambda layers
    np.testing.assert_allclose(
        again.predict(x[..., None], verbose=0), model.predict(x[..., None], verbose=0), atol=1e-6
    )


@pytest.mark.parametrize("n_mels", [40, 38])  # 20 / 19 bins into the first strided block
def test_bc_resnet_frequency_stride_computes_the_strided_depthwise_conv(n_mels: int) -> None:
    import keras
    import tensorflow as tf

    x = np.random.default_rng(2).standard_normal((2, 40, n_mels)).astype(np.float32)
    model = build_model(ModelParams("bc_resnet", 0.1, 8), (40, n_mels), 10, x)
    for block in ("bc1_0", "bc2_0"):  # the blocks with frequency stride 2
        conv = model.get_layer(f"{block}_freq")
        strided = keras.Model(conv.input, model.get_layer(f"{block}_freq_stride").output)
        h = np.random.default_rng(3).standard_normal((2, *conv.input.shape[1:]))
        h = h.astype(np.float32)
        # equal strides run on every CPU; every other frame of it is the (1, 2)-strided conv
        reference = tf.nn.depthwise_conv2d(h, conv.get_weights()[0], [1, 2, 2, 1], "SAME")
        ours = np.asarray(strided(h))
        assert ours.shape[2] == -(-h.shape[2] // 2)
        np.testing.assert_allclose(ours[:, ::2], reference.numpy(), rtol=1e-5, atol=1e-5)


def test_unknown_architecture_is_a_params_error() -> None:
    x = np.zeros((2, 40, 40), dtype=np.float32)
    with pytest.raises(ParamsError, match="bc_resnet"):
        build_model(ModelParams("transformer", 0.1, 8), (40, 40), 10, x)
