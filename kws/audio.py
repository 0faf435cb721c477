"""Decode any WAV (rate, bit depth, channels) into the fixed clip the model expects."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from kws.errors import AudioError

AudioSource = bytes | bytearray | memoryview | str | Path


def decode(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode audio bytes or a file into a mono float32 waveform and its sample rate."""
    name = "input" if isinstance(source, bytes | bytearray | memoryview) else str(source)
    data = _read_bytes(source)
    if len(data) == 0:
        raise AudioError(f"{name}: empty file")
    check_wav_structure(data, name)
    pcm = pcm16_wav(data)
    if pcm is not None:  # the common case, without libsndfile's per-call overhead
        samples, rate = pcm
        if samples.shape[0] == 0:
            raise AudioError(f"{name}: no audio samples (truncated or empty recording)")
        return samples.mean(axis=1).astype(np.float32), rate
    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise AudioError(f"{name}: not a readable audio file ({exc.error_string})") from exc
    except (RuntimeError, ValueError, TypeError) as exc:
        raise AudioError(f"{name}: not a readable audio file ({_first_line(exc)})") from exc
    if wave.shape[0] == 0:
        raise AudioError(f"{name}: no audio samples (truncated or empty recording)")
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{name}: audio holds NaN or infinite samples")
    return wave.mean(axis=1).astype(np.float32), int(rate)


_PCM = 1
_EXTENSIBLE = 0xFFFE
_PCM_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_PCM


def pcm16_wav(data: bytes) -> tuple[np.ndarray, int] | None:
    """The (samples, channels) float32 samples and rate of a 16-bit PCM WAV, scaled as
    libsndfile scales them (x / 32768); None for anything else (libsndfile reads it)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        body = offset + 8
        if chunk_id == b"fmt " and size >= 16:
            fmt = data[body : body + size]
        elif chunk_id == b"data":
            if fmt is None or not _is_pcm16(fmt):
                return None
            channels = int.from_bytes(fmt[2:4], "little")
            rate = int.from_bytes(fmt[4:8], "little")
            frames = min(size, len(data) - body) // (2 * channels)
            raw = np.frombuffer(data, dtype="<i2", count=frames * channels, offset=body)
            return raw.reshape(frames, channels).astype(np.float32) / np.float32(32768), rate
        offset = body + size + (size & 1)
    return None


def _is_pcm16(fmt: bytes) -> bool:
    tag = int.from_bytes(fmt[0:2], "little")
    channels = int.from_bytes(fmt[2:4], "little")
    bits = int.from_bytes(fmt[14:16], "little")
    if tag == _EXTENSIBLE and len(fmt) >= 40 and fmt[26:40] == _PCM_GUID_TAIL:
        tag = int.from_bytes(fmt[24:26], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    return tag == _PCM and bits == 16 and channels >= 1 and rate > 0


def check_wav_structure(data: bytes, name: str = "input") -> None:
    """Reject a RIFF/WAVE file whose data chunk claims more bytes than the file holds."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return  # not RIFF/WAVE: libsndfile decides
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = (
            data[offset : offset + 4],
            int.from_bytes(data[offset + 4 : offset + 8], "little"),
        )
        body = offset + 8
        if chunk_id == b"data":
            if size > len(data) - body:
                raise AudioError(
                    f"{name}: truncated WAV (header declares {size} bytes of audio, "
                    f"file holds {len(data) - body})"
                )
            return
        offset = body + size + (size & 1)  # chunks are word-aligned
    raise AudioError(f"{name}: truncated WAV (no audio data chunk)")


def resample(wave: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono waveform: soxr at high quality, cut or padded to ceil(n * ratio)
    samples (what librosa.resample does with its default res_type="soxr_hq")."""
    if rate == target_rate:
        return wave.astype(np.float32, copy=False)
    out = soxr.resample(wave.astype(np.float32, copy=False), rate, target_rate, quality="HQ")
    return fit_end(out, math.ceil(wave.shape[0] * target_rate / rate))


def fit_end(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Cut or zero-pad the end of a waveform to exactly n_samples."""
    if wave.shape[0] >= n_samples:
        return wave[:n_samples]
    return np.pad(wave, (0, n_samples - wave.shape[0]))


def fit_length(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Pad a short waveform (centred) or cut a long one to its loudest window."""
    length = wave.shape[0]
    if length == n_samples:
        return wave
    if length < n_samples:
        before = (n_samples - length) // 2
        return np.pad(wave, (before, n_samples - length - before))
    start = loudest_window_start(wave, n_samples)
    return wave[start : start + n_samples]


def loudest_window_start(wave: np.ndarray, n_samples: int) -> int:
    """Start index of the window of n_samples with the most energy."""
    energy = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    window_energy = energy[n_samples:] - energy[:-n_samples]
    return int(np.argmax(window_energy))


def loud_span(wave: np.ndarray, threshold_db: float = -40.0) -> tuple[int, int]:
    """First and one-past-last sample louder than threshold_db below the peak (all if none)."""
    level = np.abs(wave)
    loud = np.nonzero(level > level.max() * 10 ** (threshold_db / 20))[0]
    return (int(loud[0]), int(loud[-1]) + 1) if loud.size else (0, wave.shape[0])


def load_clip(source: AudioSource, sample_rate: int, n_samples: int) -> np.ndarray:
    """Decode, mix to mono, resample and fit to a fixed-length clip."""
    wave, rate = decode(source)
    return waveform_to_clip(wave, rate, sample_rate, n_samples)


def waveform_to_clip(wave: np.ndarray, rate: int, sample_rate: int, n_samples: int) -> np.ndarray:
    """Turn a waveform (any rate, mono or (samples, channels)) into a fixed clip."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    if wave.ndim != 1 or wave.size == 0:
        raise AudioError("waveform must be a non-empty 1-D array (or samples x channels)")
    if not np.all(np.isfinite(wave)):
        raise AudioError("waveform holds NaN or infinite samples")
    if rate <= 0:
        raise AudioError(f"invalid sample rate {rate}")
    return fit_length(resample(wave, rate, sample_rate), n_samples)


def _read_bytes(source: AudioSource) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    path = Path(source)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    return path.read_bytes()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
