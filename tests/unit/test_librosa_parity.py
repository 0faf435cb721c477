"""Serving computes features without librosa or SciPy and gets their numbers (train extra)."""

from __future__ import annotations

from dataclasses import replace

import librosa
import numpy as np
import pytest

from kws.audio import resample
from kws.features import log_mel, mel_filterbank
from tests.helpers import LN_FRONT_END


@pytest.mark.parametrize(
    ("rate", "n_fft", "n_mels", "fmin", "fmax"),
    [(16000, 512, 40, 20.0, 4000.0), (16000, 512, 32, 60.0, 3800.0), (22050, 2048, 128, 0, 11025)],
)
def test_mel_filterbank_is_librosas_slaney_filterbank_bit_for_bit(
    rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> None:
    ours = mel_filterbank(rate, n_fft, n_mels, fmin, fmax)
    theirs = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(("rate", "n"), [(8000, 8000), (44100, 66157), (48000, 1000)])
def test_resampling_is_librosas_default_soxr_hq_sample_for_sample(rate: int, n: int) -> None:
    wave = (np.random.default_rng(rate).standard_normal(n) * 0.3).astype(np.float32)
    theirs = librosa.resample(wave, orig_sr=rate, target_sr=16000)
    np.testing.assert_array_equal(resample(wave, rate, 16000), theirs)


@pytest.mark.parametrize("center", [True, False])
def test_log_mel_equals_librosa_melspectrogram_within_float32_rounding(center: bool) -> None:
    fp = replace(LN_FRONT_END, center=center)  # the ln scale compares with librosa's power
    t = np.arange(fp.clip_samples) / fp.sample_rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) * np.hanning(t.size)).astype(np.float32)
    power = librosa.feature.melspectrogram(
        y=wave,
        sr=fp.sample_rate,
        n_fft=fp.n_fft,
        hop_length=fp.hop_length,
        win_length=fp.win_length,
        center=center,
        pad_mode="constant",
        n_mels=fp.n_mels,
        fmin=fp.fmin,
        fmax=fp.fmax,
    )
    np.testing.assert_allclose(log_mel(wave, fp), np.log(power + fp.log_floor).T, atol=1e-4)


def test_liftering_is_scipys_orthonormal_dct_truncated_and_inverted() -> None:
    import scipy.fft

    from kws.features import smooth_spectrum

    feats = np.random.default_rng(0).standard_normal((2, 101, 40)).astype(np.float32)
    cepstrum = scipy.fft.dct(feats, type=2, norm="ortho", axis=-1)
    cepstrum[..., 12:] = 0
    expected = scipy.fft.idct(cepstrum, type=2, norm="ortho", axis=-1)
    np.testing.assert_allclose(smooth_spectrum(feats, 12), expected, atol=1e-5)
