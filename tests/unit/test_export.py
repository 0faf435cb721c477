"""Export: every quantization gives a graph the predictor runs with the same answers, smaller
as it says, and the package records which one it is."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kws.errors import ParamsError
from kws.export import QUANTIZATIONS, export_package, representative_rows, to_tflite
from kws.inference import Predictor
from kws.params import FeatureParams

FRAMES, MELS, CLASSES = 20, 8, 3


@pytest.fixture(scope="module")
def model():
    """A small conv + dense classifier with enough weights for sizes to differ."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(FRAMES, MELS, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((64, FRAMES, MELS)).astype(np.float32)


@pytest.fixture(scope="module")
def graphs(model, inputs: np.ndarray) -> dict[str, bytes]:
    return {q: to_tflite(model, q, inputs) for q in QUANTIZATIONS}


def tensor_types(graph: bytes) -> set[str]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=graph)
    return {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}


def test_every_variant_answers_like_the_float_model(model, inputs, graphs) -> None:
    expected = model.predict(inputs[..., np.newaxis], verbose=0)
    tolerance = {"none": 1e-5, "float16": 0.01, "dynamic_int8": 0.05, "int8": 0.05}
    for quantization, graph in graphs.items():
        predictor = Predictor(graph, ["a", "b", "c"], FeatureParams(), num_threads=1)
        got = predictor.probabilities(inputs)  # float32 in, float32 out for every variant
        assert np.abs(got - expected).max() < tolerance[quantization], quantization


def test_quantized_graphs_store_what_they_say_and_are_smaller(graphs) -> None:
    assert "float16" not in tensor_types(graphs["none"])
    assert "int8" not in tensor_types(graphs["none"])
    assert "float16" in tensor_types(graphs["float16"])
    assert "int8" in tensor_types(graphs["dynamic_int8"])
    assert "int8" in tensor_types(graphs["int8"])
    size = {q: len(g) for q, g in graphs.items()}
    assert size["float16"] < 0.6 * size["none"]
    assert size["dynamic_int8"] < 0.35 * size["none"]
    assert size["int8"] < 0.35 * size["none"]


def test_unknown_quantization_and_uncalibrated_int8_are_params_errors(model) -> None:
    with pytest.raises(ParamsError, match="unknown export.quantization 'int4'"):
        to_tflite(model, "int4")
    with pytest.raises(ParamsError, match="int8 needs representative"):
        to_tflite(model, "int8", None)


def test_the_package_records_its_quantization_and_clip_length(model, inputs, tmp_path) -> None:
    features = FeatureParams(clip_seconds=1.0)
    package = export_package(
        model, ["a", "b", "c"], features, {"note": "kept"}, tmp_path / "pkg", "int8", inputs
    )
    metadata = json.loads((package / "metadata.json").read_text())
    assert metadata["quantization"] == "int8"
    assert metadata["clip_seconds"] == 1.0
    assert metadata["note"] == "kept"
    assert metadata["tflite_bytes"] == (package / "model.tflite").stat().st_size
    assert Predictor.from_path(package).metadata["quantization"] == "int8"


def test_representative_rows_are_a_seeded_subset(inputs: np.ndarray) -> None:
    rows = representative_rows(inputs, 10, seed=1)
    assert rows.shape == (10, FRAMES, MELS)
    np.testing.assert_array_equal(rows, representative_rows(inputs, 10, seed=1))
    assert all(any(np.array_equal(r, x) for x in inputs) for r in rows)
    assert representative_rows(inputs, 1000, seed=1) is inputs
