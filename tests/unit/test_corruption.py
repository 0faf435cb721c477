"""Channel corruptions: each does to a clip what its name says, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from kws.corruption import (
    add_noise,
    apply_gain,
    coloured_noise,
    reverberate,
    room_impulse_response,
    speech_rms,
    telephone,
)
from tests.helpers import tone

RATE = 16000


def padded_word(freq: float = 440.0) -> np.ndarray:
    """A 0.5 s tone in the middle of a 1.5 s clip of silence (a short word, padded)."""
    clip = np.zeros(24000, dtype=np.float32)
    clip[8000:16000] = tone(0.5, RATE, freq)
    return clip


def level_db(wave: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(wave, dtype=np.float64)) + 1e-30))


@pytest.mark.parametrize("snr_db", [20.0, 10.0, 5.0])
def test_noise_snr_is_relative_to_the_spoken_span_not_the_padding(snr_db: float) -> None:
    clip = padded_word()
    noisy = add_noise(clip, coloured_noise(clip.shape[0], "pink", np.random.default_rng(0)), snr_db)
    noise = noisy - clip
    assert level_db(clip[8000:16000]) - level_db(noise) == pytest.approx(snr_db, abs=0.05)
    assert speech_rms(clip) == pytest.approx(np.sqrt(np.mean(clip[8000:16000] ** 2)), rel=1e-3)


def test_gain_scales_and_saturates_at_full_scale() -> None:
    clip = padded_word()  # peak 0.5
    np.testing.assert_allclose(apply_gain(clip, -12.0), clip * 10 ** (-12 / 20), rtol=1e-6)
    loud = apply_gain(clip, 12.0)
    assert loud.max() == 1.0 and loud.min() == -1.0
    assert np.mean(np.abs(loud[8000:16000]) == 1.0) > 0.5


@pytest.mark.parametrize(
    ("freq", "passes"), [(100.0, False), (1000.0, True), (3000.0, True), (5000.0, False)]
)
def test_telephone_keeps_the_voice_band_only(freq: float, passes: bool) -> None:
    clip = padded_word(freq)
    line = telephone(clip, RATE)
    assert line.shape == clip.shape and line.dtype == np.float32
    loss_db = level_db(clip[9000:15000]) - level_db(line[9000:15000])
    assert loss_db < 1.0 if passes else loss_db > 20.0


def test_room_impulse_response_decays_60_db_in_rt60() -> None:
    rt60 = 0.5
    response = room_impulse_response(rt60, RATE, np.random.default_rng(0))
    assert response.shape == (int(rt60 * RATE),) and response[0] == 1.0
    assert np.sum(response[1:] ** 2) == pytest.approx(1.0, rel=1e-5)  # tail as loud as direct
    window = int(0.05 * RATE)
    early = level_db(response[1 : 1 + window])
    half_way = level_db(response[RATE // 4 - window // 2 : RATE // 4 + window // 2])
    # 60 dB per rt60 minus the 25 ms to the first window's centre, at rt60 / 2: 30 dB less 3
    assert early - half_way == pytest.approx(27.0, abs=2.0)


def test_reverberation_keeps_the_level_and_fills_the_silence_after_the_word() -> None:
    clip = padded_word()
    wet = reverberate(clip, room_impulse_response(0.6, RATE, np.random.default_rng(1)))
    assert wet.shape == clip.shape and wet.dtype == np.float32
    assert speech_rms(wet) == pytest.approx(speech_rms(clip), rel=1e-4)
    assert level_db(wet[16000:17600]) > level_db(clip[8000:16000]) - 30  # the room rings on
    assert np.abs(wet[:8000]).max() < 1e-5  # nothing before the word (FFT rounding only)
