"""Augmentation: seeded, shape-preserving perturbations that do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from kws.augment import Augmenter, coloured_noise
from kws.features import log_mel, normalize
from kws.params import AugmentParams
from tests.helpers import LN_FRONT_END, tone

OFF = AugmentParams(
    enabled=True,
    time_shift_ms=0,
    speed=0,
    gain_db=0,
    noise_prob=0,
    reverb_prob=0,
    telephone_prob=0,
    freq_warp=0,
    freq_masks=0,
    time_masks=0,
)


def clip() -> np.ndarray:
    wave = np.zeros(16000, dtype=np.float32)
    wave[6000:10000] = tone(0.25)
    return wave


def test_with_every_transform_off_the_clip_is_unchanged() -> None:
    augmenter = Augmenter(OFF, seed=0)
    np.testing.assert_array_equal(augmenter.waveform(clip(), 16000), clip())


def test_same_seed_same_perturbations() -> None:
    params = AugmentParams(enabled=True)
    a = Augmenter(params, seed=7).waveform(clip(), 16000)
    b = Augmenter(params, seed=7).waveform(clip(), 16000)
    c = Augmenter(params, seed=8).waveform(clip(), 16000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (16000,) and a.dtype == np.float32


def test_time_shift_moves_the_word_within_the_limit() -> None:
    augmenter = Augmenter(OFF.__class__(**{**OFF.__dict__, "time_shift_ms": 100}), seed=1)
    for _ in range(20):
        shifted = augmenter.waveform(clip(), 16000)
        onset = int(np.argmax(np.abs(shifted) > 0))
        assert abs(onset - 6000) <= 1600


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_is_mixed_at_the_requested_snr(snr: float) -> None:
    params = OFF.__class__(
        **{**OFF.__dict__, "noise_prob": 1.0, "snr_db_min": snr, "snr_db_max": snr}
    )
    signal = tone(1.0)
    noisy = Augmenter(params, seed=3).waveform(signal, 16000)
    noise = noisy - signal
    measured = 10 * np.log10(np.mean(signal**2) / np.mean(noise**2))
    assert abs(measured - snr) < 0.1


def test_coloured_noise_has_the_right_spectral_slope() -> None:
    rng = np.random.default_rng(0)
    for colour, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        noise = coloured_noise(2**16, colour, rng)
        power = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(2**16)
        band = (freqs > 0.01) & (freqs < 0.4)
        fitted = np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0]
        assert abs(fitted - slope) < 0.15, colour


def test_specaugment_masks_and_warp_keep_the_shape() -> None:
    feats = log_mel(clip(), LN_FRONT_END)
    params = AugmentParams(
        enabled=True,
        freq_masks=2,
        freq_mask_width=5,
        time_masks=2,
        time_mask_width=10,
        freq_warp=0.1,
    )
    out = Augmenter(params, seed=0).spectrogram(feats)
    assert out.shape == feats.shape
    assert not np.array_equal(out, feats)
    np.testing.assert_array_equal(feats, log_mel(clip(), LN_FRONT_END))  # input untouched


def test_cmvn_gives_zero_mean_unit_variance_per_mel_bin() -> None:
    feats = log_mel(
        tone(1.0) + 0.01 * coloured_noise(16000, "white", np.random.default_rng(0)), LN_FRONT_END
    )
    out = normalize(feats, "cmvn")
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-2)


def test_tilt_darkens_the_highs_and_keeps_the_lows() -> None:
    from kws.augment import tilt

    def level(wave: np.ndarray) -> float:
        return float(20 * np.log10(np.sqrt(np.mean(wave**2))))

    low, high = tone(1.0, freq=100.0), tone(1.0, freq=3500.0)
    assert abs(level(tilt(low, 16000, -12.0)) - level(low)) < 0.5
    assert level(tilt(high, 16000, -12.0)) - level(high) == pytest.approx(-10.5, abs=0.5)


def test_mixup_blends_examples_and_labels_with_the_same_weight() -> None:
    from kws.augment import mix

    x = np.stack([np.full((4, 3, 1), float(i)) for i in range(8)]).astype(np.float32)
    y = np.eye(8, dtype=np.float32)
    mixed_x, mixed_y = mix(x, y, 0.4, np.random.default_rng(0))
    np.testing.assert_allclose(mixed_y.sum(axis=1), 1.0, rtol=1e-6)
    main = mixed_y.argmax(axis=1)
    np.testing.assert_array_equal(main, np.arange(8))  # each example keeps its own label first
    # each blended input is the label-weighted average of the two inputs it came from
    np.testing.assert_allclose(mixed_x[:, 0, 0, 0], mixed_y @ np.arange(8), rtol=1e-5)


def test_edge_cut_silences_the_start_and_end_of_the_word_only() -> None:
    from kws.augment import cut_edges

    word = clip()  # a tone from 6000 to 10000
    out = cut_edges(word, np.array([0.25, 0.5]))
    loud = np.flatnonzero(np.abs(out) > 0)
    assert abs(loud[0] - 7000) <= 160 and abs(loud[-1] - 8000) <= 160
    np.testing.assert_array_equal(out[7200:7800], word[7200:7800])


def test_a_room_rings_on_after_the_word_and_a_phone_line_drops_the_low_hum() -> None:
    roomy = Augmenter(OFF.__class__(**{**OFF.__dict__, "reverb_prob": 1.0}), seed=2)
    wet = roomy.waveform(clip(), 16000)
    assert wet.shape == clip().shape
    assert np.abs(wet[10000:11000]).mean() > 0.01  # silence after the word is filled

    hum = np.zeros(16000, dtype=np.float32)
    hum[4000:12000] = tone(0.5, freq=100.0)
    phone = Augmenter(OFF.__class__(**{**OFF.__dict__, "telephone_prob": 1.0}), seed=2)
    assert np.abs(phone.waveform(hum, 16000)[5000:11000]).max() < 0.05  # 0.5 before
