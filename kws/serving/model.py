"""The KServe model: WAV or waveforms in, labels out; the served model swaps atomically."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from kws import audio
from kws.errors import KwsError
from kws.inference import Prediction
from kws.serving import metrics
from kws.serving.source import LoadedModel, ModelRef, load, registry_version

log = logging.getLogger(__name__)
DEFAULT_RATE = 16_000  # sample rate assumed for raw waveforms that do not give one


class InputRejected(KwsError):
    """Input the service refuses, with the HTTP status to answer it with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What the service accepts."""

    max_upload_bytes: int = 1 << 20
    max_seconds: float = 10.0
    top_k: int = 3


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode uploaded audio, turning decoder errors into a 422."""
    try:
        return audio.decode(data)
    except KwsError as exc:
        raise InputRejected(str(exc).replace("input: ", "", 1), 422) from exc


def classify(served: LoadedModel, wave: np.ndarray, rate: int, limits: Limits) -> Prediction:
    """One clip through the served model, with input checks and metrics."""
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
    metrics.observe_input(duration, float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))))
    try:
        prediction = served.predictor.predict(wave, rate, top_k=limits.top_k)
    except KwsError as exc:
        raise InputRejected(str(exc)) from exc
    metrics.observe_prediction(prediction.label, prediction.confidence, served.ref.version)
    return prediction


class KwsModel(Model):
    """KServe model over kws.inference.Predictor (V1, V2 and the /predict route share it)."""

    def __init__(
        self, name: str, source: str, limits: Limits, num_threads: int | None = None
    ) -> None:
        super().__init__(name)
        self.source = source
        self.limits = limits
        self.num_threads = num_threads
        self._served: LoadedModel | None = None
        self._reload_lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------
    def load(self) -> bool:
        """Load the model named by the source URI (raises a KwsError if it cannot)."""
        self._swap(load(self.source, self.name, self.num_threads))
        self.ready = True
        return self.ready

    def snapshot(self) -> LoadedModel:
        """The model serving now; a request reads it once, so it never mixes two versions."""
        served = self._served
        if served is None:
            raise ModelNotReady(self.name)
        return served

    def reload(self, uri: str | None = None) -> tuple[ModelRef, ModelRef]:
        """Load a model (the current source by default) and swap it in; return (old, new).

        Requests keep being answered by the old model while the new one loads; if loading
        fails, the old one keeps serving and the error propagates.
        """
        with self._reload_lock:
            previous = self.snapshot()
            target = uri or self.source
            try:
                loaded = load(target, self.name, self.num_threads)
            except Exception:
                metrics.RELOADS.labels(result="failure").inc()
                raise
            self._swap(loaded)
            self.source = target
            metrics.RELOADS.labels(result="success").inc()
            log.info(
                "serving %s v%s (was v%s)",
                loaded.ref.name,
                loaded.ref.version,
                previous.ref.version,
            )
            return previous.ref, loaded.ref

    def reload_if_moved(self) -> bool:
        """Reload when the registry alias we serve now points to another version."""
        version = registry_version(self.source)
        if version is None or version == self.snapshot().ref.version:
            return False
        self.reload()
        return True

    def _swap(self, loaded: LoadedModel) -> None:
        self._served = loaded  # one reference assignment: atomic for every reader
        metrics.set_model_info(loaded.ref, loaded.source)

    # --- KServe protocol metadata -------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 inputs: a WAV per element, or float waveforms (parameter sample_rate)."""
        return [
            {"name": "audio", "datatype": "BYTES", "shape": [-1]},
            {"name": "waveform", "datatype": "FP32", "shape": [-1, -1]},
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 outputs: label, confidence and the class probabilities."""
        n_classes = len(self.snapshot().predictor.labels) if self._served else -1
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "confidence", "datatype": "FP32", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
        ]

    # --- inference -------------------------------------------------------------------------
    async def predict(
        self,
        payload: dict[str, Any] | InferRequest | bytes,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """V1 (dict, or raw WAV bytes) and V2 (InferRequest) inference."""
        served = self.snapshot()
        if isinstance(payload, InferRequest):
            return self._predict_v2(served, payload)
        if isinstance(payload, bytes | bytearray):
            clips = [decode_wav(bytes(payload))]
        elif isinstance(payload, dict) and isinstance(payload.get("instances"), list):
            rate = _rate(payload.get("parameters"), DEFAULT_RATE)
            clips = [_v1_instance(item, rate) for item in payload["instances"]]
        else:
            raise InvalidInput('expected {"instances": [...]} (items: {"b64": WAV} or waveforms)')
        predictions = [classify(served, wave, r, self.limits).to_dict() for wave, r in clips]
        return {"predictions": predictions, "model": served.ref.to_dict()}

    def _predict_v2(self, served: LoadedModel, request: InferRequest) -> InferResponse:
        if not request.inputs:
            raise InvalidInput("the request has no inputs")
        tensor = request.get_input_by_name("audio") or request.get_input_by_name("waveform")
        tensor = tensor or request.inputs[0]
        try:
            array = tensor.as_numpy()
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"input {tensor.name!r}: {exc}") from exc
        if tensor.datatype == "BYTES":
            clips = [decode_wav(_as_bytes(item)) for item in array.reshape(-1)]
        elif tensor.datatype in ("FP32", "FP64", "FP16"):
            rate = _rate(tensor.parameters, _rate(request.parameters, DEFAULT_RATE))
            waves = array.astype(np.float32)
            waves = waves[np.newaxis] if waves.ndim == 1 else waves
            if waves.ndim != 2:
                raise InvalidInput(f"waveform shape must be [n, samples], got {list(array.shape)}")
            clips = [(wave, rate) for wave in waves]
        else:
            raise InvalidInput(
                f"input {tensor.name!r}: datatype {tensor.datatype} is not supported "
                "(BYTES holding WAV files, or FP32 waveforms)"
            )
        labels = served.predictor.labels
        every_class = replace(self.limits, top_k=len(labels))  # the full probability vector
        predictions = [classify(served, wave, r, every_class) for wave, r in clips]
        probabilities = np.array(
            [[_probability(p, label) for label in labels] for p in predictions], dtype=np.float32
        )
        n = len(predictions)
        outputs = [
            InferOutput("label", [n], "BYTES", data=[p.label for p in predictions]),
            InferOutput("confidence", [n], "FP32", data=[float(p.confidence) for p in predictions]),
            InferOutput(
                "probabilities",
                [n, len(labels)],
                "FP32",
                data=probabilities.reshape(-1).tolist(),
            ),
        ]
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            model_version=served.ref.version,
            infer_outputs=outputs,
            parameters={"model_alias": served.ref.alias or "", "labels": ",".join(labels)},
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )


def _probability(prediction: Prediction, label: str) -> float:
    for entry in prediction.top_k:
        if entry["label"] == label:
            return float(entry["probability"])
    return 0.0


def _rate(parameters: Any, default: int) -> int:
    """The sample_rate parameter of a request or tensor, if any."""
    if not isinstance(parameters, dict) or "sample_rate" not in parameters:
        return default
    value: Any = parameters["sample_rate"]
    try:
        rate = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"sample_rate must be an integer, got {value!r}") from exc
    if not 1_000 <= rate <= 384_000:
        raise InvalidInput(f"sample_rate {rate} is out of range (1000..384000)")
    return rate


def _v1_instance(item: Any, rate: int) -> tuple[np.ndarray, int]:
    """A V1 instance: {"b64": WAV}, {"waveform": [...], "sample_rate": n} or [floats]."""
    if isinstance(item, dict) and "b64" in item:
        return decode_wav(_b64(item["b64"]))
    if isinstance(item, dict) and "waveform" in item:
        return _waveform(item["waveform"]), _rate(item, rate)
    if isinstance(item, list):
        return _waveform(item), rate
    raise InvalidInput('each instance is {"b64": <WAV>}, {"waveform": [...]} or a list of floats')


def _waveform(values: Any) -> np.ndarray:
    try:
        wave = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("a waveform is a flat list of numbers") from exc
    if wave.ndim != 1:
        raise InvalidInput("a waveform is a flat list of numbers")
    return wave


def _b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput('"b64" must be a base64 string')
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f'"b64" is not valid base64 ({exc})') from exc


def _as_bytes(item: Any) -> bytes:
    """A BYTES element: raw bytes (binary extension) or base64 text (JSON)."""
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    if isinstance(item, str):
        return _b64(item)
    raise InvalidInput("BYTES elements must hold WAV files")
