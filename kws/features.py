"""The one feature extractor: log-mel spectrograms, shared by training and serving."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

from kws.audio import AudioSource, load_clip, waveform_to_clip
from kws.errors import ParamsError
from kws.params import FeatureParams

# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above
_MEL_LINEAR_HZ = 200.0 / 3  # Hz per mel below the break
_MEL_BREAK_HZ = 1000.0
_MEL_BREAK = _MEL_BREAK_HZ / _MEL_LINEAR_HZ
_MEL_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: ArrayLike) -> np.ndarray:
    """Slaney mels of frequencies in Hz."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _MEL_LINEAR_HZ
    logarithmic = _MEL_BREAK + np.log(np.maximum(hz, _MEL_BREAK_HZ) / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _MEL_BREAK_HZ, logarithmic, linear)


def mel_to_hz(mels: ArrayLike) -> np.ndarray:
    """Frequencies in Hz of Slaney mels."""
    mels = np.asarray(mels, dtype=np.float64)
    linear = mels * _MEL_LINEAR_HZ
    above = np.maximum(mels, _MEL_BREAK) - _MEL_BREAK
    logarithmic = _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * above)
    return np.where(mels >= _MEL_BREAK, logarithmic, linear)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """Slaney-normalised triangular mel filters (n_mels, 1 + n_fft // 2), float32.

    The same numbers as librosa.filters.mel with its defaults (htk=False, norm="slaney"),
    so serving needs no librosa.
    """
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, np.newaxis] - fft_hz[np.newaxis, :]
    rising = -ramps[:-2] / widths[:-1, np.newaxis]
    falling = ramps[2:] / widths[1:, np.newaxis]
    weights = np.maximum(0, np.minimum(rising, falling)).astype(np.float32)
    # equal area per filter (constant energy per band however wide); float32 triangles
    # scaled in float64, in librosa's order of rounding
    area = 2.0 / (edges[2:] - edges[:-2])
    return (weights * area[:, np.newaxis]).astype(np.float32)


@lru_cache(maxsize=8)
def _mel_basis(fp: FeatureParams) -> np.ndarray:
    return mel_filterbank(fp.sample_rate, fp.n_fft, fp.n_mels, fp.fmin, fp.fmax)


@lru_cache(maxsize=8)
def _window(fp: FeatureParams) -> np.ndarray:
    """Periodic Hann window of win_length, zero-padded to n_fft and centred (as librosa)."""
    window = np.hanning(fp.win_length + 1)[:-1]
    before = (fp.n_fft - fp.win_length) // 2
    return np.pad(window, (before, fp.n_fft - fp.win_length - before)).astype(np.float32)


@lru_cache(maxsize=8)
def _windowed_dft(fp: FeatureParams) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The real DFT of a windowed frame as one float32 matrix, for the FFT bins the mel
    filters use only; those filters (bins, n_mels); the span of frame samples the window keeps.

    An n_fft-point rfft computes every bin of every sample; the speech embedding's 32 mels
    of 60-3800 Hz use 120 of 257 bins and the window 400 of 512 samples, so this product
    costs a third of numpy's FFT (0.19 vs 0.64 ms per 1.5 s clip). Its power spectrum is the
    FFT's to float32 rounding (tests/unit/test_features.py compares them on FSDD clips).
    """
    basis = _mel_basis(fp)
    used = np.flatnonzero(basis.any(axis=0))
    low, high = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
    window = _window(fp).astype(np.float64)
    kept = np.flatnonzero(window)
    start, stop = int(kept[0]), int(kept[-1]) + 1
    angle = (
        2 * np.pi * np.outer(np.arange(start, stop), np.arange(low, high)) / fp.n_fft
    )  # sample index within the n_fft frame times bin: the phases of the full transform
    dft = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) * window[start:stop, None]
    mel_t = np.ascontiguousarray(basis[:, low:high].T)
    return dft.astype(np.float32), mel_t, start, stop


def log_mel(clip: np.ndarray, fp: FeatureParams) -> np.ndarray:
    """Log-mel spectrogram (frames, n_mels) of a fixed-length clip."""
    return log_mel_batch(clip[np.newaxis], fp)[0]


def log_mel_batch(clips: np.ndarray, fp: FeatureParams, chunk: int = 256) -> np.ndarray:
    """Log-mel spectrograms (n, frames, n_mels) of clips (n, samples), vectorised.

    Centred frames with zero padding, periodic Hann window, power spectrum, Slaney
    mel filters: the same numbers as librosa.feature.melspectrogram, ~5x faster.
    """
    clips = np.asarray(clips, dtype=np.float32)
    half = fp.n_fft // 2 if fp.center else 0
    dft, mel_t, start, stop = _windowed_dft(fp)
    bins = mel_t.shape[0]
    out = []
    for first in range(0, clips.shape[0], chunk):
        batch = clips[first : first + chunk]
        padded = np.pad(batch, ((0, 0), (half, half))) if half else batch
        frames = np.lib.stride_tricks.sliding_window_view(padded, fp.n_fft, axis=1)
        frames = frames[:, :: fp.hop_length, start:stop]  # the samples the window keeps
        sounding = _sounding_frames(padded, fp.hop_length, frames.shape[1], start, stop)
        spectra = frames[sounding] @ dft  # real parts, then imaginary parts
        mel = np.zeros((*frames.shape[:2], mel_t.shape[1]), dtype=np.float32)
        mel[sounding] = (np.square(spectra[:, :bins]) + np.square(spectra[:, bins:])) @ mel_t
        out.append(log_scale(mel, fp))
    feats = np.concatenate(out).astype(np.float32)
    if fp.lifter > 0:
        feats = smooth_spectrum(feats, fp.lifter)
    if fp.frames > 0:
        if fp.scale != "ln":
            raise ParamsError("features.frames/trim_db need features.scale: ln")
        feats = np.stack([time_normalize(f, fp.frames, fp.trim_db, fp.log_floor) for f in feats])
    return (
        np.stack([normalize(f, fp.normalize) for f in feats]) if fp.normalize != "none" else feats
    )


def _sounding_frames(
    padded: np.ndarray, hop: int, n_frames: int, start: int, stop: int
) -> np.ndarray:
    """Which frames (clips, frames) reach from a clip's first to its last non-zero sample.

    A clip is mostly the zero padding around a short word (two thirds of a 1.5 s clip of
    an FSDD digit): frames of that padding have exactly zero spectra, so are not transformed.
    """
    nonzero = padded != 0
    first = nonzero.argmax(axis=1)[:, np.newaxis]
    last = padded.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)[:, np.newaxis]
    offsets = np.arange(n_frames) * hop
    reach = (offsets + start <= last) & (offsets + stop - 1 >= first)
    return reach & nonzero.any(axis=1)[:, np.newaxis]


DB_AMIN = 1e-10


def log_scale(mel: np.ndarray, fp: FeatureParams) -> np.ndarray:
    """Log of mel power (n, frames, mels): natural log over a floor, or dB floored
    top_db below each clip's peak (the speech embedding's front end)."""
    if fp.scale == "ln":
        return np.log(mel + fp.log_floor)
    if fp.scale == "db":
        # 16-bit full scale, as the embedding's front end was fed int16 samples
        db = 10 * np.log10(np.maximum(mel * 32768.0**2, DB_AMIN))
        return np.maximum(db, db.max(axis=(1, 2), keepdims=True) - fp.top_db)
    raise ParamsError(f"unknown features.scale {fp.scale!r} (ln, db)")


def smooth_spectrum(feats: np.ndarray, coefficients: int) -> np.ndarray:
    """Keep the spectral envelope, drop fine structure: the first cepstral coefficients
    (MFCCs) mapped back onto the mel axis, so pitch harmonics no longer ripple across bins."""
    kept = _dct_matrix(feats.shape[-1])[:coefficients]
    return (feats @ (kept.T @ kept)).astype(np.float32)  # DCT, truncate, inverse DCT


@lru_cache(maxsize=8)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (rows: coefficients), as scipy.fft.dct(norm="ortho")."""
    k = np.arange(n)[:, np.newaxis]
    basis = np.cos(np.pi * k * (2 * np.arange(n) + 1) / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis


def speech_span(
    feats: np.ndarray, trim_db: float, log_floor: float = 1e-6, margin: int = 2
) -> tuple[int, int]:
    """First and last frame (inclusive) within trim_db of the loudest frame, plus a margin.

    Energies leave out the log floor, so digital silence never counts as sound, however
    quiet the word. Noise within trim_db of the word counts as sound (nothing is trimmed).
    """
    if trim_db <= 0:
        return 0, feats.shape[0] - 1
    power = np.maximum(np.exp(feats.astype(np.float64)) - log_floor, 0).sum(axis=1)
    energy_db = 10 * np.log10(power + 1e-30)
    loud = np.flatnonzero(energy_db >= energy_db.max() - trim_db)
    return max(0, int(loud[0]) - margin), min(feats.shape[0] - 1, int(loud[-1]) + margin)


def time_normalize(
    feats: np.ndarray, frames: int, trim_db: float = 0.0, log_floor: float = 1e-6
) -> np.ndarray:
    """Trim silent edges, then stretch the spoken span to `frames` (speaking-rate invariance).

    Interpolating spectrogram frames changes duration without moving pitch or formants.
    """
    first, last = speech_span(feats, trim_db, log_floor)
    position = np.linspace(first, last, frames)
    lo = np.floor(position).astype(int)
    hi = np.minimum(lo + 1, feats.shape[0] - 1)
    frac = (position - lo).astype(np.float32)[:, np.newaxis]
    return (feats[lo] * (1 - frac) + feats[hi] * frac).astype(np.float32)


TILT_DEGREE = 2  # a quadratic over the mel axis: level, tilt and bow


def normalize(feats: np.ndarray, mode: str) -> np.ndarray:
    """Per-utterance normalisation: none, utterance (mean/std), tilt or cmvn (per mel bin)."""
    if mode == "none":
        return feats
    if mode == "utterance":
        return ((feats - feats.mean()) / (feats.std() + 1e-5)).astype(np.float32)
    if mode == "tilt":
        # subtract only the coarse shape of the clip's mean spectrum: the microphone's
        # colouring goes, the formants that tell words apart stay
        mean = feats.mean(axis=0)
        bins = np.linspace(-1, 1, mean.shape[0])
        out = feats - np.polyval(np.polyfit(bins, mean, TILT_DEGREE), bins).astype(np.float32)
        return (out / (out.std() + 1e-5)).astype(np.float32)
    if mode == "cmvn":
        mean, std = feats.mean(axis=0, keepdims=True), feats.std(axis=0, keepdims=True)
        return ((feats - mean) / (std + 1e-5)).astype(np.float32)
    raise ParamsError(f"unknown features.normalize {mode!r} (none, utterance, tilt, cmvn)")


def features_of(source: AudioSource, fp: FeatureParams) -> np.ndarray:
    """Features of an audio file or WAV bytes."""
    return log_mel(load_clip(source, fp.sample_rate, fp.clip_samples), fp)


def features_of_waveform(wave: np.ndarray, rate: int, fp: FeatureParams) -> np.ndarray:
    """Features of a waveform at any sample rate."""
    return log_mel(waveform_to_clip(wave, rate, fp.sample_rate, fp.clip_samples), fp)
