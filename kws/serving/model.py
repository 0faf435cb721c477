"""The KServe model: WAV or waveforms in, labels out; the served model swaps atomically."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from kws.drift import DEFAULT_WINDOW, input_statistics
from kws.errors import KwsError
from kws.inference import Prediction
from kws.serving import decode, metrics
from kws.serving.decode import Clip, InputRejected, Limits, malformed
from kws.serving.source import LoadedModel, ModelRef, load, registry_version

log = logging.getLogger(__name__)


def classify(served: LoadedModel, clip: Clip, limits: Limits) -> Prediction:
    """One checked clip through the served model, with input, prediction and drift metrics."""
    prediction, bookkeeping = classify_then_record(served, clip, limits)
    bookkeeping()
    return prediction


def classify_then_record(
    served: LoadedModel, clip: Clip, limits: Limits
) -> tuple[Prediction, Callable[[], None]]:
    """One checked clip through the served model, and its metrics and drift counts as a
    call to make later (after the answer is sent: they are not on the client's clock)."""
    wave, rate = decode.checked(clip, limits)
    try:
        prediction = served.predictor.predict(wave, rate)
    except KwsError as exc:
        record_input(wave, rate)
        raise InputRejected(str(exc)) from exc
    return prediction, partial(record, served, wave, rate, prediction)


def record_input(wave: np.ndarray, rate: int) -> dict[str, float]:
    """Count a clip's duration and level in the input metrics; its statistics."""
    statistics = input_statistics(wave, rate)
    metrics.observe_input(statistics["duration_seconds"], rms_of(statistics))
    return statistics


def record(served: LoadedModel, wave: np.ndarray, rate: int, prediction: Prediction) -> None:
    """Count one answered clip: input and prediction metrics, and the drift window."""
    statistics = record_input(wave, rate)
    metrics.observe_prediction(prediction.label, prediction.confidence, served.ref.version)
    if served.drift is not None:
        served.drift.add(statistics, prediction.confidence, prediction.label)


def rms_of(statistics: dict[str, float]) -> float:
    """The linear RMS level (full scale 1) of a clip's input statistics."""
    return float(10 ** (statistics["rms_dbfs"] / 20))


class KwsModel(Model):
    """KServe model over kws.inference.Predictor (V1, V2 and the /predict route share it)."""

    def __init__(
        self,
        name: str,
        source: str,
        limits: Limits,
        num_threads: int | None = None,
        drift_window: int = DEFAULT_WINDOW,
    ) -> None:
        super().__init__(name)
        self.source = source
        self.limits = limits
        self.num_threads = num_threads
        self.drift_window = drift_window
        self._served: LoadedModel | None = None
        self._reload_lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------
    def load(self) -> bool:
        """Load the model named by the source URI (raises a KwsError if it cannot)."""
        self._swap(load(self.source, self.name, self.num_threads, self.drift_window))
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
                loaded = load(target, self.name, self.num_threads, self.drift_window)
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
        metrics.watch_drift(loaded.drift)  # a new model starts a new window
        if loaded.drift is None:
            log.info(
                "model v%s has no drift reference (exported before drift monitoring): "
                "no drift scores",
                loaded.ref.version,
            )

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
            clips = [decode.wav(bytes(payload))]
        elif isinstance(payload, dict) and isinstance(payload.get("instances"), list):
            rate = decode.sample_rate(payload.get("parameters"))
            clips = [decode.v1_instance(item, rate) for item in payload["instances"]]
        else:
            raise malformed('expected {"instances": [...]} (items: {"b64": WAV} or waveforms)')
        top_k = self.limits.top_k
        predictions = [classify(served, clip, self.limits).to_dict(top_k) for clip in clips]
        return {"predictions": predictions, "model": served.ref.to_dict()}

    def _predict_v2(self, served: LoadedModel, request: InferRequest) -> InferResponse:
        if not request.inputs:
            raise malformed("the request has no inputs")
        tensor = request.get_input_by_name("audio") or request.get_input_by_name("waveform")
        tensor = tensor or request.inputs[0]
        try:
            array = tensor.as_numpy()
        except (ValueError, TypeError) as exc:
            raise malformed(f"input {tensor.name!r}: {exc}") from exc
        if tensor.datatype == "BYTES":
            clips = [decode.wav(decode.wav_bytes(item)) for item in array.reshape(-1)]
        elif tensor.datatype in ("FP32", "FP64", "FP16"):
            rate = decode.sample_rate(tensor.parameters, decode.sample_rate(request.parameters))
            waves = array.astype(np.float32)
            waves = waves[np.newaxis] if waves.ndim == 1 else waves
            if waves.ndim != 2:
                raise malformed(f"waveform shape must be [n, samples], got {list(array.shape)}")
            clips = [(wave, rate) for wave in waves]
        else:
            raise malformed(
                f"input {tensor.name!r}: datatype {tensor.datatype} is not supported "
                "(BYTES holding WAV files, or FP32 waveforms)"
            )
        labels = served.predictor.labels
        predictions = [classify(served, clip, self.limits) for clip in clips]
        probabilities = np.array(
            [[p.probabilities[label] for label in labels] for p in predictions], dtype=np.float32
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
