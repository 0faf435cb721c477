"""The one input decoder of every serving route and the MLflow pyfunc: WAV bytes, base64 WAV
or float waveforms in; a checked mono clip and its sample rate out. No KServe import, so the
pyfunc can use it too. Errors carry the HTTP status to answer with (400 malformed request,
422 audio that cannot be used)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from kws import audio
from kws.errors import KwsError
from kws.inference import DEFAULT_TOP_K

DEFAULT_RATE = 16_000  # sample rate assumed for raw waveforms that do not give one
Clip = tuple[np.ndarray, int]


class InputRejected(KwsError):
    """Input the service refuses, with the HTTP status to answer it with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def malformed(message: str) -> InputRejected:
    """A request whose shape is wrong (400)."""
    return InputRejected(message, 400)


@dataclass(frozen=True)
class Limits:
    """What the service accepts, and how many classes a prediction lists."""

    max_upload_bytes: int = 1 << 20
    max_seconds: float = 10.0
    top_k: int = DEFAULT_TOP_K


def wav(data: bytes) -> Clip:
    """Decode uploaded audio (any WAV), turning decoder errors into a 422."""
    try:
        return audio.decode(data)
    except KwsError as exc:
        raise InputRejected(str(exc).replace("input: ", "", 1), 422) from exc


def checked(clip: Clip, limits: Limits) -> Clip:
    """The clip, if it is one finite, non-empty utterance within the duration limit."""
    wave, rate = clip
    if rate <= 0:
        raise InputRejected(f"invalid sample rate {rate}")
    if wave.ndim != 1 or wave.size == 0:
        raise InputRejected("audio must hold at least one sample")
    duration = wave.size / rate
    if duration > limits.max_seconds:
        raise InputRejected(
            f"audio is {duration:.1f} s long; the limit is {limits.max_seconds:g} s "
            "(send one utterance)"
        )
    if not np.all(np.isfinite(wave)):
        raise InputRejected("audio holds NaN or infinite samples")
    return clip


def sample_rate(parameters: Any, default: int = DEFAULT_RATE) -> int:
    """The `sample_rate` of a request, instance or tensor parameters, else default."""
    if not isinstance(parameters, dict) or parameters.get("sample_rate") is None:
        return default
    value: Any = parameters["sample_rate"]
    if isinstance(value, float) and value != value:  # NaN: a pandas cell left empty
        return default
    try:
        rate = int(value)
    except (TypeError, ValueError) as exc:
        raise malformed(f"sample_rate must be an integer, got {value!r}") from exc
    if not 1_000 <= rate <= 384_000:
        raise malformed(f"sample_rate {rate} is out of range (1000..384000)")
    return rate


def waveform(values: Any) -> np.ndarray:
    """A flat list (or array) of numbers as a float32 waveform."""
    try:
        wave = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise malformed("a waveform is a flat list of numbers") from exc
    if wave.ndim != 1:
        raise malformed("a waveform is a flat list of numbers")
    return wave


def wav_bytes(item: Any) -> bytes:
    """WAV bytes from raw bytes or base64 text."""
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if not isinstance(item, str):
        raise malformed("audio must be WAV bytes or a base64 string")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise malformed(f"audio is not valid base64 ({exc})") from exc


def v1_instance(item: Any, default_rate: int = DEFAULT_RATE) -> Clip:
    """A KServe V1 instance: {"b64": WAV}, {"waveform": [...], "sample_rate": n} or [floats]."""
    if isinstance(item, dict) and "b64" in item:
        return wav(wav_bytes(item["b64"]))
    if isinstance(item, dict) and "waveform" in item:
        return waveform(item["waveform"]), sample_rate(item, default_rate)
    if isinstance(item, list):
        return waveform(item), default_rate
    raise malformed('each instance is {"b64": <WAV>}, {"waveform": [...]} or a list of floats')


def record(row: dict[str, Any]) -> Clip:
    """An MLflow pyfunc row: `audio` (WAV bytes or base64) or `waveform` (+ `sample_rate`)."""
    data = row.get("audio")
    if isinstance(data, bytes | bytearray | str) and len(data):
        return wav(wav_bytes(data))
    values = row.get("waveform")
    if values is not None and len(values):
        return waveform(values), sample_rate(row)
    raise malformed("each row needs `audio` (WAV bytes) or `waveform` (+ `sample_rate`)")
