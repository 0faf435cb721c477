"""The one feature extractor: log-mel spectrograms, shared by training and serving."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from tqdm import tqdm

from kws.audio import AudioSource, load_clip, waveform_to_clip
from kws.data.manifest import Sample
from kws.errors import AudioError, DataError, ParamsError
from kws.params import FeatureParams, Params

log = logging.getLogger(__name__)


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
    out = []
    for start in range(0, clips.shape[0], chunk):
        padded = np.pad(clips[start : start + chunk], ((0, 0), (half, half)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, fp.n_fft, axis=1)
        frames = frames[:, :: fp.hop_length] * _window(fp)
        # numpy's FFT, not SciPy's (the predictor image has no SciPy): ~0.25 ms more per
        # 1.5 s clip; in float64, as numpy's float32 transform is no faster
        power = (np.abs(np.fft.rfft(frames.astype(np.float64), axis=-1)) ** 2).astype(np.float32)
        out.append(log_scale(power @ _mel_basis(fp).T, fp))
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


@dataclass
class FeatureSet:
    """Features of a whole manifest, aligned with its samples."""

    x: np.ndarray  # (n, frames, n_mels) float32
    labels: np.ndarray  # (n,) str
    splits: np.ndarray  # (n,) str
    paths: np.ndarray  # (n,) str
    skipped: list[str]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of one split."""
        mask = self.splits == name
        return self.x[mask], self.labels[mask]


def cache_key(fp: FeatureParams, dhash: str) -> str:
    """Cache key: the feature parameters and the data content hash."""
    blob = json.dumps({"features": dataclasses.asdict(fp), "data": dhash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def featurize(
    samples: Sequence[Sample], fp: FeatureParams, cache_dir: Path | None = None, dhash: str = ""
) -> FeatureSet:
    """Features of every sample, from the cache when the data and parameters are unchanged."""
    cache = cache_dir / f"features-{cache_key(fp, dhash)}.npz" if cache_dir and dhash else None
    if cache is not None and cache.is_file():
        log.info("features from cache %s", cache)
        return load_feature_set(cache)
    rows, kept, skipped = [], [], []
    for sample in tqdm(samples, desc="features", unit="file"):
        try:
            rows.append(features_of(sample.path, fp))
            kept.append(sample)
        except AudioError as exc:
            skipped.append(f"{sample.path}: {exc}")
    if skipped:
        log.warning("skipped %d unreadable file(s), e.g. %s", len(skipped), skipped[0])
    if not rows:
        raise DataError("no readable audio: every file was skipped")
    fs = FeatureSet(
        x=np.stack(rows),
        labels=np.array([s.label for s in kept]),
        splits=np.array([s.split for s in kept]),
        paths=np.array([s.path for s in kept]),
        skipped=skipped,
    )
    if cache is not None:
        save_feature_set(fs, cache, cache.stem.removeprefix("features-"))
    return fs


def save_feature_set(fs: FeatureSet, path: Path, key: str = "") -> None:
    """Write a FeatureSet atomically (npz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp,
        x=fs.x,
        labels=fs.labels,
        splits=fs.splits,
        paths=fs.paths,
        skipped=np.array(fs.skipped, dtype=str),
        key=np.array(key),
    )
    tmp.replace(path)


def load_feature_set(path: Path) -> FeatureSet:
    """Read a FeatureSet written by save_feature_set."""
    if not path.is_file():
        raise DataError(f"features not found: {path} (run `kws featurize` first)")
    with np.load(path) as z:
        return FeatureSet(z["x"], z["labels"], z["splits"], z["paths"], list(z["skipped"]))


FEATURES_FILE = "features.npz"


def run(params: Params) -> FeatureSet:
    """Features of the prepared manifest, written to paths.features (cached by content)."""
    from kws.data import DATA_INFO, MANIFEST, read_manifest

    prepared = Path(params.paths.prepared)
    samples = read_manifest(prepared / MANIFEST)
    dhash = json.loads((prepared / DATA_INFO).read_text())["data_hash"]
    out = Path(params.paths.features) / FEATURES_FILE
    key = cache_key(params.features, dhash)
    if out.is_file() and _stored_key(out) == key:
        return load_feature_set(out)
    fs = featurize(samples, params.features, Path(params.paths.cache) / "features", dhash)
    save_feature_set(fs, out, key)
    return fs


def _stored_key(path: Path) -> str:
    with np.load(path) as z:
        return str(z["key"]) if "key" in z else ""


def clips_of(paths: Sequence[str], fp: FeatureParams, cache_dir: Path | None = None) -> np.ndarray:
    """Fixed-length clips (n, samples) of readable files, for augmentation; cached by content."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(fp), sort_keys=True).encode())
    for path in paths:
        digest.update(path.encode() + hashlib.md5(Path(path).read_bytes()).digest())
    cache = cache_dir / f"clips-{digest.hexdigest()[:16]}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        return np.load(cache)
    clips = np.stack(
        [
            load_clip(p, fp.sample_rate, fp.clip_samples)
            for p in tqdm(paths, desc="decode clips", unit="file")
        ]
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npy")
        np.save(tmp, clips)
        tmp.replace(cache)
    return clips
