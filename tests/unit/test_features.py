"""Time normalisation: the spoken span, whatever its length and position, fills fixed frames."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kws.errors import ParamsError
from kws.features import log_mel, speech_span, time_normalize
from kws.params import FeatureParams
from tests.helpers import LN_FRONT_END, tone


def word_at(start_s: float, seconds: float) -> np.ndarray:
    """A 1 s clip holding a tone (the 'word') at start_s for `seconds`, silence around."""
    wave = np.zeros(16000, dtype=np.float32)
    start = int(start_s * 16000)
    wave[start : start + int(seconds * 16000)] = tone(seconds)
    return wave


def test_features_have_the_configured_number_of_frames() -> None:
    fp = replace(LN_FRONT_END, frames=40, trim_db=30)
    assert fp.n_frames == 40
    assert log_mel(word_at(0.3, 0.4), fp).shape == (40, fp.n_mels)
    assert LN_FRONT_END.n_frames == 101  # without time normalisation: the whole clip


def test_speech_span_finds_the_word_within_a_couple_of_frames() -> None:
    feats = log_mel(word_at(0.3, 0.4), LN_FRONT_END)
    first, last = speech_span(feats, trim_db=30, margin=0)
    assert abs(first - 30) <= 3 and abs(last - 70) <= 3  # 10 ms frames


def test_without_trimming_the_whole_clip_is_stretched() -> None:
    feats = np.arange(101, dtype=np.float32)[:, None].repeat(4, axis=1)
    out = time_normalize(feats, 11, trim_db=0)
    np.testing.assert_allclose(out[:, 0], np.linspace(0, 100, 11))


def test_the_same_word_early_or_late_gives_the_same_features() -> None:
    fp = replace(LN_FRONT_END, frames=32, trim_db=30)
    early, late = log_mel(word_at(0.1, 0.4), fp), log_mel(word_at(0.5, 0.4), fp)
    np.testing.assert_allclose(early, late, atol=1e-3)


def test_a_fast_and_a_slow_word_fill_the_same_frames() -> None:
    fp = replace(LN_FRONT_END, frames=32, trim_db=30)
    fast, slow = log_mel(word_at(0.3, 0.25), fp), log_mel(word_at(0.2, 0.5), fp)
    # a steady tone: once stretched, every inner frame is the tone, whatever its duration
    band = int(np.argmax(slow[16]))
    np.testing.assert_allclose(fast[4:-4, band], slow[4:-4, band], atol=0.05)
    assert (fast[4:-4, band] > fast[0, band] + 5).all()


def test_silence_is_stretched_whole_not_an_error() -> None:
    out = log_mel(np.zeros(16000, dtype=np.float32), replace(LN_FRONT_END, frames=40, trim_db=30))
    assert out.shape == (40, 40) and np.isfinite(out).all()


def test_liftering_keeps_the_envelope_and_smooths_the_ripple() -> None:
    from kws.features import smooth_spectrum

    bins = np.arange(40, dtype=np.float32)
    envelope = -0.1 * bins  # a smooth spectral tilt
    ripple = np.where(bins % 2 == 0, 1.0, -1.0).astype(np.float32)  # harmonics-like
    out = smooth_spectrum((envelope + ripple)[None], coefficients=12)[0]
    assert np.abs(out - envelope)[5:-5].max() < 0.3
    assert smooth_spectrum(envelope[None], 40)[0] == pytest.approx(envelope, abs=1e-5)


def test_tilt_normalisation_removes_a_microphone_tilt_and_keeps_formant_peaks() -> None:
    from kws.features import normalize

    bins = np.arange(40, dtype=np.float32)
    formants = np.exp(-0.5 * ((bins - 10) / 2) ** 2) + np.exp(-0.5 * ((bins - 25) / 2) ** 2)
    frames = np.tile(formants, (30, 1)) + np.random.default_rng(0).normal(0, 0.05, (30, 40))
    dark = frames - 0.15 * bins  # the same word through a darker microphone
    a, b = normalize(frames.astype(np.float32), "tilt"), normalize(dark.astype(np.float32), "tilt")
    np.testing.assert_allclose(a, b, atol=0.05)
    assert set(np.argsort(a.mean(axis=0))[-2:]) <= {9, 10, 11, 24, 25, 26}  # peaks survive
    assert normalize(dark.astype(np.float32), "cmvn").mean(axis=0) == pytest.approx(0, abs=1e-4)


@pytest.mark.parametrize("level", [1.0, 1e-3])
def test_a_quiet_word_is_found_as_well_as_a_loud_one(level: float) -> None:
    # digital silence around the word must never pass for sound, even 45 dB down
    feats = log_mel(word_at(0.3, 0.4) * level, LN_FRONT_END)
    first, last = speech_span(feats, trim_db=45, margin=0)
    assert abs(first - 30) <= 3 and abs(last - 70) <= 3


def test_db_scale_is_floored_top_db_under_the_clip_peak() -> None:
    fp = replace(LN_FRONT_END, scale="db", top_db=80.0, center=False)
    clip = np.concatenate([np.zeros(8000, np.float32), tone(0.5)])  # digital silence, then a tone
    feats = log_mel(clip, fp)
    assert feats.shape == (fp.n_frames, fp.n_mels) == (1 + (16000 - 512) // 160, 40)
    assert feats.max() - feats.min() == pytest.approx(80.0, abs=1e-3)
    louder = log_mel(clip * 10, fp)
    np.testing.assert_allclose(louder.max() - feats.max(), 20.0, atol=1e-3)  # dB, not ln


def test_uncentred_frames_start_at_the_first_sample() -> None:
    clip = tone(1.0)
    centred = log_mel(clip, replace(LN_FRONT_END, center=True))
    uncentred = log_mel(clip, replace(LN_FRONT_END, center=False))
    assert centred.shape[0] == 101 and uncentred.shape[0] == 97
    # a steady tone: the same spectrum, without the zero padding of centred edge frames
    assert uncentred[0].argmax() == centred[50].argmax()
    assert uncentred[0].max() == pytest.approx(centred[50].max(), abs=0.05)
    assert centred[0].max() < centred[50].max() - 0.5


@pytest.mark.parametrize("bad", [{"scale": "bel"}, {"scale": "db", "frames": 40}])
def test_unknown_scale_or_stretching_db_features_is_a_params_error(bad: dict) -> None:
    with pytest.raises(ParamsError, match="features"):
        log_mel(tone(0.5), FeatureParams(**bad))
