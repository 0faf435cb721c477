"""Keras models: the TF tutorial CNN (baseline) and a Hello Edge DS-CNN."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kws.errors import ParamsError
from kws.params import ModelParams
from kws.pretrained import (
    EMBEDDING_SIZE,
    FLOOR,
    HOP_FRAMES,
    LEAK,
    N_MELS,
    WINDOW_FRAMES,
    EmbeddingStack,
    embedding_frames,
    embedding_stack,
)

if TYPE_CHECKING:
    import keras

ARCHITECTURES = ("cnn", "ds_cnn", "bc_resnet", "speech_embedding")


def build_model(
    architecture_params: ModelParams,
    input_shape: tuple[int, int],
    n_classes: int,
    train_x: np.ndarray,
) -> keras.Model:
    """Build the model named in params; its normalisation layer is fitted on train_x."""
    import keras

    if architecture_params.architecture == "speech_embedding":
        return _speech_embedding_model(input_shape, n_classes, architecture_params, train_x)
    if architecture_params.embedding_stack is not None:
        raise ParamsError("model.embedding_stack needs model.architecture speech_embedding")
    norm = keras.layers.Normalization(axis=None, name="normalize")
    norm.adapt(train_x[..., np.newaxis])
    inputs = keras.Input(shape=(*input_shape, 1), name="log_mel")
    if architecture_params.architecture == "cnn":
        outputs = _tutorial_cnn(inputs, norm, n_classes, architecture_params)
    elif architecture_params.architecture == "ds_cnn":
        outputs = _ds_cnn(inputs, norm, n_classes, architecture_params)
    elif architecture_params.architecture == "bc_resnet":
        outputs = _bc_resnet(inputs, norm, n_classes, architecture_params)
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


def _bc_block(x, channels: int, freq_stride: int, dilation: int, dropout: float, name: str):
    """Broadcasted residual block: a frequency-wise depthwise conv, then a temporal one on
    the frequency-averaged map, broadcast back over frequency (Kim et al., 2021)."""
    from keras import layers

    transition = x.shape[-1] != channels or freq_stride > 1
    if transition:
        x = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_expand")(x)
        x = layers.BatchNormalization(name=f"{name}_expand_bn")(x)
        x = layers.ReLU(name=f"{name}_expand_relu")(x)
    # layout (batch, time, freq, channels): frequency convs are (1, k), temporal ones (k, 1)
    f2 = layers.DepthwiseConv2D((1, 3), padding="same", use_bias=False, name=f"{name}_freq")(x)
    if freq_stride > 1:
        f2 = _frequency_stride(f2, freq_stride, name=f"{name}_freq_stride")
    f2 = layers.BatchNormalization(name=f"{name}_freq_bn")(f2)
    f1 = layers.AveragePooling2D((1, f2.shape[2]), name=f"{name}_pool")(f2)  # over frequency
    f1 = layers.DepthwiseConv2D(
        (3, 1), dilation_rate=(dilation, 1), padding="same", use_bias=False, name=f"{name}_time"
    )(f1)
    f1 = layers.BatchNormalization(name=f"{name}_time_bn")(f1)
    f1 = layers.Activation("swish", name=f"{name}_swish")(f1)
    f1 = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_point")(f1)
    f1 = layers.SpatialDropout2D(dropout, name=f"{name}_drop")(f1)
    out = layers.Add(name=f"{name}_add")([f2, f1] if transition else [x, f2, f1])
    return layers.ReLU(name=f"{name}_relu")(out)


def _frequency_stride(x, stride: int, name: str):
    """Keep the frequency bins a (1, 3) "same" depthwise conv with strides (1, stride) would
    centre on: that conv, computed at stride 1 then subsampled. TensorFlow's CPU depthwise
    kernel without oneDNN only takes equal strides in time and frequency."""
    from keras import layers

    bins, kernel = x.shape[2], 3
    kept = -(-bins // stride)
    pad_before = max((kept - 1) * stride + kernel - bins, 0) // 2  # TF's "same" padding
    first = kernel // 2 - pad_before  # the stride-1 bin the strided conv's first output is
    if first:
        x = layers.Cropping2D(((0, 0), (first, 0)), name=f"{name}_crop")(x)
    # a 1x1 max pool with strides (1, stride) keeps every stride-th bin, nothing else
    return layers.MaxPooling2D((1, 1), strides=(1, stride), name=name)(x)


def _bc_resnet(inputs, norm, n_classes: int, p: ModelParams):
    """BC-ResNet-like: broadcasted residual blocks; model.width is its base channels (8 = x1)."""
    from keras import layers

    c = p.width
    x = norm(inputs)
    x = layers.Conv2D(2 * c, (5, 5), strides=(2, 2), padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    stages = ((c, 1, 1, 2), (int(1.5 * c), 2, 2, 2), (2 * c, 2, 4, 4), (int(2.5 * c), 1, 8, 4))
    for stage, (channels, stride, dilation, blocks) in enumerate(stages):
        for block in range(blocks):
            x = _bc_block(
                x,
                channels,
                stride if block == 0 else 1,
                dilation,
                p.dropout,
                name=f"bc{stage}_{block}",
            )
    x = layers.DepthwiseConv2D((5, 5), padding="same", use_bias=False)(x)
    x = layers.Conv2D(4 * c, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dense(n_classes, activation="softmax", name="probabilities")(x)


def load_keras_model(path: str | Path) -> keras.Model:
    """Load a saved Keras model of any of our architectures."""
    import keras

    floored_leaky_relu_layer()  # registers the custom layer before deserialising
    return keras.models.load_model(path)


@lru_cache(maxsize=1)
def floored_leaky_relu_layer() -> type:
    """The speech embedding's activation, max(leaky_relu(x, 0.2), -0.4), as a Keras layer
    (registered, so saved models load without unsafe Lambda layers)."""
    import keras

    @keras.saving.register_keras_serializable(package="kws")
    class FlooredLeakyReLU(keras.layers.Layer):
        """max(leaky_relu(x, 0.2), -0.4)."""

        def call(self, x):
            return keras.ops.maximum(keras.ops.leaky_relu(x, LEAK), FLOOR)

    return FlooredLeakyReLU


def _speech_embedding_model(
    input_shape: tuple[int, int], n_classes: int, p: ModelParams, train_x: np.ndarray | None
):
    """Frozen Google speech_embedding (one 96-d embedding per 80 ms), then a small head
    whose input normalisation is fitted on the training clips' embeddings."""
    import keras
    from keras import layers

    frames, mels = input_shape
    if mels != N_MELS or frames < WINDOW_FRAMES:
        raise ParamsError(
            f"model.architecture speech_embedding needs {N_MELS} mel bins and at least "
            f"{WINDOW_FRAMES} frames (features.n_mels: 32, clip_seconds >= 0.78); "
            f"got {mels} bins x {frames} frames"
        )
    inputs = keras.Input(shape=(frames, mels, 1), name="log_mel")
    x = inputs
    needed = WINDOW_FRAMES + HOP_FRAMES * (embedding_frames(frames) - 1)
    if frames > needed:  # frames after the last window change no embedding: skip their cost
        x = layers.Cropping2D(((0, frames - needed), (0, 0)), name="embedding_frames")(x)
    x = layers.Rescaling(0.1, offset=2.0, name="embedding_scale")(x)  # openWakeWord's
    x = _embedding_backbone(x, embedding_stack(p.embedding_stack), p.fine_tune)
    embeddings = layers.Reshape((embedding_frames(frames), EMBEDDING_SIZE), name="embeddings")(x)
    norm = layers.Normalization(axis=-1, name="normalize_embeddings")
    if train_x is not None:
        norm.adapt(keras.Model(inputs, embeddings).predict(train_x[..., np.newaxis], verbose=0))
    x = norm(embeddings)
    x = layers.Concatenate(name="pooled")(
        [_embedding_mean(x, p.pooling), layers.GlobalMaxPooling1D()(x)]
    )
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(p.width, activation="relu")(x)
    x = layers.Dropout(p.dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="speech_embedding")


POOLINGS = ("mean_max", "attention")


def _embedding_mean(x, pooling: str):
    """The mean over time of the embeddings: plain, or weighted by a learned score of each."""
    from keras import layers

    if pooling == "mean_max":
        return layers.GlobalAveragePooling1D()(x)
    if pooling != "attention":
        raise ParamsError(f"unknown model.pooling {pooling!r} (choose from {', '.join(POOLINGS)})")
    scores = layers.Dense(1, name="attention_score")(x)  # (batch, windows, 1)
    weights = layers.Softmax(axis=1, name="attention_weights")(scores)
    weighted = layers.Dot(axes=1, name="attention_mean")([weights, x])  # (batch, 1, 96)
    return layers.Flatten(name="attention_pooled")(weighted)


def unfreeze_embedding_convolutions(model: keras.Model, n: int) -> int:
    """Make the last n convolutions of a speech-embedding model trainable; how many it has."""
    convs = [layer for layer in model.layers if layer.name.startswith("embedding_conv")]
    if not convs:
        raise ParamsError("model.fine_tune needs model.architecture speech_embedding")
    for layer in convs[len(convs) - n :] if n > 0 else []:
        layer.trainable = True
    return len(convs)


def _embedding_backbone(x, stack: EmbeddingStack, fine_tune: int = 0):
    """The speech embedding's conv stack on x with the stack's weights, frozen but for the
    last fine_tune convolutions."""
    from keras import layers

    activation = floored_leaky_relu_layer()
    weights = stack.weights
    n = 0
    for kind, size, filters in stack.layout:
        if kind == "pool":
            x = layers.MaxPooling2D(size, name=f"embedding_pool{n}")(x)
            continue
        if size == (3, 3):
            x = layers.ZeroPadding2D(((0, 0), (1, 1)), name="embedding_pad")(x)
        kernel, bias = weights[n]
        conv = layers.Conv2D(
            filters,
            size,
            padding="same" if size == (1, 3) else "valid",
            use_bias=bias is not None,
            trainable=n >= len(weights) - fine_tune,
            name=f"embedding_conv{n}",
        )
        x = conv(x)
        conv.set_weights([kernel] if bias is None else [kernel, bias])
        if n < len(weights) - 1:  # the last convolution is linear
            x = activation(name=f"embedding_act{n}")(x)
        n += 1
    return x
