"""The DFT front end (kws.features) gives the numbers of the numpy-FFT one it replaced.

The reference below is the previous kws.features.log_mel_batch core, kept verbatim: frame,
window, n_fft-point rfft in float64, power, mel filters, log scale. Real FSDD clips, both
front ends the project ships (the speech embedding's dB one, the DS-CNN's ln one).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kws.audio import load_clip
from kws.features import _mel_basis, _window, log_mel_batch, log_scale
from kws.params import FeatureParams
from tests.helpers import LN_FRONT_END

EMBEDDING_FRONT_END = FeatureParams()  # params.yaml's: 32 mels of 60-3800 Hz, dB, uncentred


def reference_log_mel(clips: np.ndarray, fp: FeatureParams) -> np.ndarray:
    """The FFT front end as it was before the DFT product replaced it."""
    half = fp.n_fft // 2 if fp.center else 0
    padded = np.pad(np.asarray(clips, dtype=np.float32), ((0, 0), (half, half)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, fp.n_fft, axis=1)
    frames = frames[:, :: fp.hop_length] * _window(fp)
    power = (np.abs(np.fft.rfft(frames.astype(np.float64), axis=-1)) ** 2).astype(np.float32)
    return log_scale(power @ _mel_basis(fp).T, fp).astype(np.float32)


def fsdd_clips(folder: Path, fp: FeatureParams, n: int = 40) -> np.ndarray:
    """n recordings of every speaker and digit, as the predictor loads them."""
    paths = sorted((folder / "recordings").glob("*.wav"))[:: max(1, 3000 // n)][:n]
    return np.stack([load_clip(path, fp.sample_rate, fp.clip_samples) for path in paths])


@pytest.mark.parametrize(
    ("fp", "tolerance"),
    [(EMBEDDING_FRONT_END, 1e-3), (LN_FRONT_END, 1e-3)],  # dB, and natural log units
    ids=["speech-embedding-db", "ds-cnn-ln"],
)
def test_the_dft_front_end_equals_the_fft_one_on_fsdd_clips(
    fsdd_dir: Path, fp: FeatureParams, tolerance: float
) -> None:
    clips = fsdd_clips(fsdd_dir, fp)
    ours, reference = log_mel_batch(clips, fp), reference_log_mel(clips, fp)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=0, atol=tolerance)


def test_a_full_band_front_end_with_the_window_as_long_as_the_fft_is_the_same(
    fsdd_dir: Path,
) -> None:
    fp = replace(LN_FRONT_END, n_fft=400, win_length=400, fmin=0.0, fmax=8000.0)
    clips = fsdd_clips(fsdd_dir, fp, n=8)
    np.testing.assert_allclose(
        log_mel_batch(clips, fp), reference_log_mel(clips, fp), rtol=0, atol=1e-3
    )
