"""Keras models: the TF tutorial CNN (baseline) and a Hello Edge DS-CNN."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kws.errors import ParamsError
from kws.params import ModelParams

if TYPE_CHECKING:
    import keras

ARCHITECTURES = ("cnn", "ds_cnn")


def build_model(
    architecture_params: ModelParams,
    input_shape: tuple[int, int],
    n_classes: int,
    train_x: np.ndarray,
) -> keras.Model:
    """Build the model named in params; its normalisation layer is fitted on train_x."""
    import keras

    norm = keras.layers.Normalization(axis=None, name="normalize")
    norm.adapt(train_x[..., np.newaxis])
    inputs = keras.Input(shape=(*input_shape, 1), name="log_mel")
    if architecture_params.architecture == "cnn":
        outputs = _tutorial_cnn(inputs, norm, n_classes, architecture_params)
    elif architecture_params.architecture == "ds_cnn":
        outputs = _ds_cnn(inputs, norm, n_classes, architecture_params)
    else:
        raise ParamsError(
            f"unknown model.architecture {architecture_params.architecture!r} "
            f"(choose from {', '.join(ARCHITECTURES)})"
        )
    return keras.Model(inputs, outputs, name=architecture_params.architecture)


def _tutorial_cnn(inputs, norm, n_classes: int, p: ModelParams):
    """The CNN of TensorFlow's "simple audio recognition" tutorial."""
    from keras import layers

    x = layers.Resizing(32, 32)(inputs)
    x = norm(x)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(p.dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return layers.Dense(n_classes, activation="softmax", name="probabilities")(x)


def _ds_cnn(inputs, norm, n_classes: int, p: ModelParams):
    """DS-CNN (Zhang et al., "Hello Edge", 2017): a conv then depthwise-separable blocks."""
    from keras import layers

    x = norm(inputs)
    x = layers.Conv2D(p.width, (10, 4), strides=(2, 2), padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(p.dropout)(x)
    for block in range(4):
        # strides in blocks 1 and 3: our 101x40 input is 4x Hello Edge's 49x10 MFCCs
        stride = 2 if block in (0, 2) else 1
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(p.width, 1, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(p.dropout)(x)
    return layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
