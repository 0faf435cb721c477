"""Embedding stacks: a narrower copy of the pretrained stack is saved, checked and built on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kws.data.download import sha256_file
from kws.errors import DataError, ParamsError
from kws.model import build_model
from kws.params import ModelParams
from kws.pretrained import (
    EMBEDDING_SIZE,
    LAYOUT,
    Layout,
    Weights,
    conv_weights,
    embedding_stack,
    load_stack,
    save_stack,
    stack_metadata,
)


def narrow(width: float) -> tuple[Layout, Weights]:
    """The pretrained stack with its first channels kept (the last convolution keeps 96)."""
    convs = sum(kind == "conv" for kind, _, _ in LAYOUT)
    layout, weights, n, inputs = [], [], 0, 1
    for kind, size, filters in LAYOUT:
        if kind == "conv":
            filters = EMBEDDING_SIZE if n == convs - 1 else max(1, round(filters * width))
            kernel, bias = conv_weights()[n]
            weights.append(
                (kernel[:, :, :inputs, :filters], None if bias is None else bias[:filters])
            )
            inputs, n = filters, n + 1
        layout.append((kind, size, filters))
    return tuple(layout), tuple(weights)


def test_a_saved_stack_loads_back_with_its_layout_weights_and_checksum(tmp_path: Path) -> None:
    layout, weights = narrow(0.25)
    path = save_stack(tmp_path / "stacks" / "quarter.npz", layout, weights)
    stack = load_stack(path)
    assert stack.layout == layout
    for (kernel, bias), (saved_kernel, saved_bias) in zip(weights, stack.weights, strict=True):
        np.testing.assert_array_equal(saved_kernel, kernel)
        assert (saved_bias is None) == (bias is None)
    assert (stack.source, stack.sha256) == ("quarter.npz", sha256_file(path))
    assert stack_metadata(str(path)) == {
        "embedding_stack": {"file": "quarter.npz", "sha256": sha256_file(path)}
    }


def test_no_stack_file_means_the_pretrained_stack() -> None:
    stack = embedding_stack(None)
    assert stack.layout == LAYOUT and stack.weights is conv_weights()
    assert stack_metadata(None) == {}


def _save_raw(path: Path, **arrays: np.ndarray) -> Path:
    with open(path, "wb") as out:
        np.savez(out, **arrays)
    return path


def test_what_is_not_a_stack_file_is_refused_in_one_line(tmp_path: Path) -> None:
    layout, weights = narrow(0.25)
    good = save_stack(tmp_path / "good.npz", layout, weights)
    with np.load(good) as data:
        arrays = {name: data[name] for name in data.files}
    (tmp_path / "text.npz").write_text("not numpy")
    cases = {
        tmp_path / "missing.npz": "is not a file",
        tmp_path / "text.npz": "not an embedding stack file",
        _save_raw(tmp_path / "v2.npz", **{**arrays, "format": np.array(2)}): "format 1",
        _save_raw(
            tmp_path / "short.npz", **{**arrays, "filters": arrays["filters"][:-1]}
        ): "layers",
        _save_raw(
            tmp_path / "nokernel.npz", **{k: v for k, v in arrays.items() if k != "kernel19"}
        ): "kernel is missing",
        _save_raw(
            tmp_path / "wide.npz", **{**arrays, "kernel3": np.zeros((3, 1, 7, 12), np.float32)}
        ): "convolution 3 has a kernel of shape",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message) as error:
            load_stack(path)
        assert "\n" not in str(error.value) and path.name in str(error.value)


def test_a_stack_must_end_in_the_96_dimensional_embedding(tmp_path: Path) -> None:
    layout, weights = narrow(0.25)
    last = weights[-1][0][..., :48]
    bad_layout = (*layout[:-1], ("conv", layout[-1][1], 48))
    with pytest.raises(DataError, match="the last convolution gives 48, not 96"):
        save_stack(tmp_path / "s.npz", bad_layout, (*weights[:-1], (last, None)))
    assert not (tmp_path / "s.npz").exists()


def test_the_speech_embedding_model_builds_on_a_saved_stack(tmp_path: Path) -> None:
    layout, weights = narrow(0.25)
    path = save_stack(tmp_path / "quarter.npz", layout, weights)
    x = np.full((2, 97, 32), 50.0, dtype=np.float32)
    model = build_model(ModelParams(embedding_stack=str(path)), (97, 32), 10, x)
    convs = [layer for layer in model.layers if layer.name.startswith("embedding_conv")]
    assert [layer.filters for layer in convs] == [f for kind, _, f in layout if kind == "conv"]
    np.testing.assert_array_equal(convs[0].get_weights()[0], weights[0][0])
    assert model.output_shape == (None, 10)


def test_a_stack_file_needs_the_speech_embedding_architecture(tmp_path: Path) -> None:
    path = save_stack(tmp_path / "quarter.npz", *narrow(0.25))
    x = np.zeros((2, 97, 40), dtype=np.float32)
    with pytest.raises(ParamsError, match="model.embedding_stack needs model.architecture"):
        build_model(ModelParams("ds_cnn", embedding_stack=str(path)), (97, 40), 10, x)
