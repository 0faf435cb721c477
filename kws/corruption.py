"""Channel corruptions of fixed-length clips: noise at a speech-relative SNR, gain with
16-bit saturation, a telephone band and room reverberation.

The robustness benchmark evaluates models under them; training-time augmentation draws
from the same functions, so "trained on" and "measured on" mean the same corruption.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal

from kws.audio import loud_span, resample

NOISE_COLOURS = ("white", "pink", "brown")
TELEPHONE_BAND_HZ = (300.0, 3400.0)
TELEPHONE_RATE = 8000
SPEECH_SPAN_DB = -40.0  # samples this far under the peak bound the spoken span
DECAY_60_DB = 3 * np.log(10)  # amplitude exp(-k t / rt60) is 60 dB down at t = rt60


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f) or brown (1/f²) noise."""
    white = rng.standard_normal(n, dtype=np.float32)
    if colour == "white":
        noise = white
    else:
        spectrum = scipy.fft.rfft(white)
        freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n).astype(np.float32)
        spectrum /= np.sqrt(freqs) if colour == "pink" else freqs
        noise = scipy.fft.irfft(spectrum, n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def speech_rms(clip: np.ndarray) -> float:
    """RMS of the spoken span (first to last sample within 40 dB of the peak), so the
    silence a short word is padded with does not count as signal."""
    start, end = loud_span(clip, SPEECH_SPAN_DB)
    return float(np.sqrt(np.mean(np.square(clip[start:end], dtype=np.float64))))


def add_noise(clip: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """The clip plus noise (same length) scaled to snr_db under the speech's RMS."""
    noise_rms = float(np.sqrt(np.mean(np.square(noise, dtype=np.float64)))) + 1e-12
    scale = speech_rms(clip) / noise_rms / 10 ** (snr_db / 20)
    return (clip + scale * noise).astype(np.float32)


def apply_gain(clip: np.ndarray, db: float) -> np.ndarray:
    """Louder or quieter by db, saturating at full scale as a 16-bit recording would."""
    return np.clip(clip * np.float32(10 ** (db / 20)), -1.0, 1.0).astype(np.float32)


def telephone(clip: np.ndarray, sample_rate: int) -> np.ndarray:
    """A narrowband phone line: 300-3400 Hz band-pass (4th-order Butterworth), down to
    8 kHz and back up to sample_rate."""
    sos = scipy.signal.butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=sample_rate, output="sos")
    band = scipy.signal.sosfilt(sos, clip).astype(np.float32)
    narrow = resample(band, sample_rate, TELEPHONE_RATE)
    return resample(narrow, TELEPHONE_RATE, sample_rate)[: clip.shape[0]].astype(np.float32)


def room_impulse_response(
    rt60: float, sample_rate: int, rng: np.random.Generator, direct_db: float = 0.0
) -> np.ndarray:
    """A synthetic room: a direct-path impulse, then Gaussian noise whose amplitude decays
    60 dB in rt60 seconds (a diffuse reverberant tail), rt60 long; the tail's energy is
    direct_db under the direct path's."""
    n = max(2, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-DECAY_60_DB * t / rt60)
    tail[0] = 0.0
    tail *= 10 ** (-direct_db / 20) / np.sqrt(np.sum(tail**2))
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(clip: np.ndarray, impulse_response: np.ndarray) -> np.ndarray:
    """The clip convolved with a room's impulse response, cut to its length and brought
    back to the clip's speech level."""
    wet = scipy.signal.fftconvolve(clip, impulse_response)[: clip.shape[0]]
    level = speech_rms(clip) / (speech_rms(wet) + 1e-12)
    return (wet * level).astype(np.float32)
