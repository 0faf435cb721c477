"""Training-time augmentation: waveform perturbations, noise, frequency warping, SpecAugment,
and the batches of freshly augmented features that training fits on (with mixup).

Everything here runs on the train split only; serving never augments.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kws.audio import decode, fit_length, loud_span, resample
from kws.corruption import (
    NOISE_COLOURS,
    add_noise,
    coloured_noise,
    reverberate,
    room_impulse_response,
    telephone,
)
from kws.features import log_mel_batch
from kws.params import AugmentParams, Params


class Augmenter:
    """Random, seeded perturbations of fixed-length clips and their log-mel features."""

    def __init__(
        self, params: AugmentParams, seed: int, noise_bank: list[np.ndarray] | None = None
    ) -> None:
        self.p = params
        self.rng = np.random.default_rng(seed)
        self.noise_bank = noise_bank or []

    def waveform(self, clip: np.ndarray, sample_rate: int) -> np.ndarray:
        """Edge cut, speed, time shift, gain, tilt, room, noise and phone line on one clip
        (same length out)."""
        p, rng, n = self.p, self.rng, clip.shape[0]
        out = clip
        if p.edge_cut > 0 and rng.random() < p.edge_cut_prob:
            out = cut_edges(out, rng.uniform(0, p.edge_cut, size=2))
        if p.speed > 0:
            factor = rng.uniform(1 - p.speed, 1 + p.speed)
            # playing faster = fewer samples at the same rate (tempo and pitch move together);
            # linear interpolation: soxr at arbitrary ratios costs ~40 ms a clip
            out = fit_length(_speed(out, factor), n)
        if p.time_shift_ms > 0:
            limit = int(sample_rate * p.time_shift_ms / 1000)
            out = _shift(out, int(rng.integers(-limit, limit + 1)))
        if p.gain_db > 0:
            out = out * np.float32(10 ** (rng.uniform(-p.gain_db, p.gain_db) / 20))
        if p.tilt_db > 0:
            out = tilt(out, sample_rate, rng.uniform(-p.tilt_db, p.tilt_db))
        if p.reverb_prob > 0 and rng.random() < p.reverb_prob:
            rt60 = rng.uniform(p.rt60_min, p.rt60_max)
            out = reverberate(out, room_impulse_response(rt60, sample_rate, rng))
        if p.noise_prob > 0 and rng.random() < p.noise_prob:
            out = add_noise(out, self._noise(n), rng.uniform(p.snr_db_min, p.snr_db_max))
        if p.telephone_prob > 0 and rng.random() < p.telephone_prob:
            out = telephone(out, sample_rate)
        return out.astype(np.float32)

    def _noise(self, n: int) -> np.ndarray:
        """n samples of a background recording or of white, pink or brown noise."""
        rng = self.rng
        if self.noise_bank and rng.random() < 0.5:
            source = self.noise_bank[int(rng.integers(len(self.noise_bank)))]
            start = int(rng.integers(0, max(1, source.shape[0] - n)))
            return fit_length(source[start : start + n], n)
        return coloured_noise(n, NOISE_COLOURS[int(rng.integers(3))], rng)

    def spectrogram(self, feats: np.ndarray) -> np.ndarray:
        """Frequency warp (VTLP-like) and SpecAugment masks on one (frames, mels) array."""
        p, rng = self.p, self.rng
        out = feats
        if p.freq_warp > 0:
            out = _warp_mel_axis(out, rng.uniform(1 - p.freq_warp, 1 + p.freq_warp))
        else:
            out = out.copy()
        frames, mels = out.shape
        fill = out.mean()
        for _ in range(p.freq_masks):
            width = int(rng.integers(0, p.freq_mask_width + 1))
            start = int(rng.integers(0, max(1, mels - width)))
            out[:, start : start + width] = fill
        for _ in range(p.time_masks):
            width = int(rng.integers(0, p.time_mask_width + 1))
            start = int(rng.integers(0, max(1, frames - width)))
            out[start : start + width, :] = fill
        return out


def cut_edges(clip: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Silence the first and last fractions of the spoken span, as a tight VAD or a late
    push-to-talk does (one FSDD speaker's recordings are cut like this)."""
    start, end = loud_span(clip, threshold_db=-30.0)
    span = end - start
    out = clip.copy()
    out[: start + int(fractions[0] * span)] = 0
    out[end - int(fractions[1] * span) :] = 0
    return out


def tilt(clip: np.ndarray, sample_rate: int, db_at_4k: float) -> np.ndarray:
    """Colour a clip like a microphone would: a gain linear in frequency, 0 dB at DC.

    Applied before the noise, so a darker microphone buries its highs in its own noise floor.
    """
    freqs = np.fft.rfftfreq(clip.shape[0], 1 / sample_rate)
    gain = 10 ** (db_at_4k * np.minimum(freqs, 4000.0) / 4000.0 / 20)
    return np.fft.irfft(np.fft.rfft(clip) * gain, clip.shape[0]).astype(np.float32)


def _speed(clip: np.ndarray, factor: float) -> np.ndarray:
    """Play a clip `factor` times faster (linear interpolation)."""
    positions = np.arange(0, clip.shape[0] - 1, factor)
    return np.interp(positions, np.arange(clip.shape[0]), clip).astype(np.float32)


def _shift(clip: np.ndarray, offset: int) -> np.ndarray:
    """Shift right (positive) or left, filling with silence."""
    if offset == 0:
        return clip
    out = np.zeros_like(clip)
    if offset > 0:
        out[offset:] = clip[:-offset]
    else:
        out[:offset] = clip[-offset:]
    return out


def _warp_mel_axis(feats: np.ndarray, alpha: float) -> np.ndarray:
    """Stretch the mel axis by alpha (vocal tract length perturbation on features)."""
    mels = feats.shape[1]
    source = np.clip(np.arange(mels) / alpha, 0, mels - 1)
    lo = np.floor(source).astype(int)
    hi = np.minimum(lo + 1, mels - 1)
    frac = (source - lo).astype(np.float32)
    return feats[:, lo] * (1 - frac) + feats[:, hi] * frac


def background_noise(params: Params) -> list[np.ndarray]:
    """Speech Commands' _background_noise_ recordings (16 kHz mono), when the data has them."""
    folder = Path(params.paths.raw) / "speech_commands" / "_background_noise_"
    noises = []
    for path in sorted(folder.glob("*.wav")) if params.data.source == "speech_commands" else []:
        wave, rate = decode(path)
        noises.append(resample(wave, rate, params.features.sample_rate))
    return noises


def _augmented_batches_class() -> type:
    import keras

    class _AugmentedBatches(keras.utils.PyDataset):
        """Batches of freshly augmented features; new perturbations every epoch."""

        def __init__(self, clips: np.ndarray, y: np.ndarray, params: Params, batch_size: int):
            super().__init__()
            self.clips, self.y, self.batch_size = clips, y, batch_size
            self.mixup, self.seed, self.epoch = params.train.mixup, params.seed, 0
            self.fp = params.features
            self.augmenter = Augmenter(params.augment, params.seed, background_noise(params))
            self.rng = np.random.default_rng(params.seed + 1)
            self.x, self.order = self._make_epoch()
            # the next epoch is augmented in a thread while Keras trains on this one;
            # epochs are still made one after the other, so runs stay reproducible
            self._pool = ThreadPoolExecutor(max_workers=1)
            self._next = self._pool.submit(self._make_epoch)

        def _make_epoch(self) -> tuple[np.ndarray, np.ndarray]:
            aug, rate = self.augmenter, self.fp.sample_rate
            waves = np.stack([aug.waveform(clip, rate) for clip in self.clips])
            feats = log_mel_batch(waves, self.fp)
            x = np.stack([aug.spectrogram(f) for f in feats])[..., np.newaxis]
            return x, self.rng.permutation(len(self.clips))

        def close(self) -> None:
            """Stop preparing epochs nobody will train on."""
            self._next.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)

        def __len__(self) -> int:
            return int(np.ceil(len(self.clips) / self.batch_size))

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            if self.mixup <= 0:
                return self.x[rows], self.y[rows]
            return mix(self.x[rows], self.y[rows], self.mixup, self._mix_rng(index))

        def _mix_rng(self, index: int) -> np.random.Generator:
            return np.random.default_rng([self.seed, self.epoch, index])

        def on_epoch_end(self) -> None:
            self.x, self.order = self._next.result()
            self.epoch += 1
            self._next = self._pool.submit(self._make_epoch)

    return _AugmentedBatches


def mix(
    x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Mixup: each example blended with another of the batch, labels blended alike."""
    weight = rng.beta(alpha, alpha, size=len(x)).astype(np.float32)
    weight = np.maximum(weight, 1 - weight)  # the first example stays the main one
    partner = rng.permutation(len(x))
    wx = weight.reshape(-1, *([1] * (x.ndim - 1)))
    return wx * x + (1 - wx) * x[partner], weight[:, None] * y + (1 - weight[:, None]) * y[partner]


def augmented_batches(clips: np.ndarray, y: np.ndarray, params: Params, batch_size: int) -> Any:
    """A Keras PyDataset of augmented training batches (keras imported lazily)."""
    return _augmented_batches_class()(clips, y, params, batch_size)
