"""Predictor: a model package in, label + confidence + top-k out. No TensorFlow needed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np

from kws.audio import AudioSource
from kws.features import features_of, features_of_waveform
from kws.package import read_package
from kws.params import FeatureParams

DEFAULT_TOP_K = 3  # classes listed in a prediction's JSON


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 (Python's stderr is untouched)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def serve_single_threaded() -> None:
    """For serving processes: one BLAS thread per request.

    A clip's features are a few small matrix products; OpenBLAS worker threads only spin
    against each other and the server (a 0.03 ms product took 0.7 ms with 2 threads).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class Prediction:
    """What the model says about one clip: the label, its probability, every class's."""

    label: str
    confidence: float
    probabilities: dict[str, float]  # every class, in the model's label order

    def top_k(self, k: int = DEFAULT_TOP_K) -> list[dict[str, Any]]:
        """The k most likely classes, most likely first."""
        ranked = sorted(self.probabilities.items(), key=lambda item: -item[1])
        return [{"label": label, "probability": p} for label, p in ranked[: max(1, k)]]

    def to_dict(self, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        """JSON-ready dict: label, confidence and the top-k classes."""
        return {"label": self.label, "confidence": self.confidence, "top_k": self.top_k(top_k)}


class Predictor:
    """Runs a model package's TFLite model on audio, with the package's own features."""

    def __init__(
        self,
        model_bytes: bytes,
        labels: list[str],
        features: FeatureParams,
        metadata: dict[str, Any] | None = None,
        num_threads: int | None = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.labels = labels
        self.features = features
        self.metadata = metadata or {}
        with _quiet_native_stderr():  # the runtime announces its XNNPACK delegate on fd 2
            self._interpreter = Interpreter(
                model_content=model_bytes, num_threads=num_threads or min(2, os.cpu_count() or 1)
            )
            self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._lock = Lock()  # one TFLite interpreter is not safe to invoke concurrently

    @classmethod
    def from_path(cls, package_dir: str | Path, num_threads: int | None = None) -> Predictor:
        """Load a model package directory written by kws.export."""
        package = read_package(package_dir)
        return cls(
            package.model_bytes, package.labels, package.features, package.metadata, num_threads
        )

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch (n, frames, n_mels) of features."""
        batch = np.asarray(features, dtype=np.float32)[..., np.newaxis]
        out = []
        with self._lock:
            for item in batch:  # the converted model has a fixed batch of 1
                self._interpreter.set_tensor(self._input, item[np.newaxis])
                self._interpreter.invoke()
                out.append(self._interpreter.get_tensor(self._output)[0].copy())
        return np.stack(out)

    def predict(
        self, audio: AudioSource | np.ndarray, sample_rate: int | None = None
    ) -> Prediction:
        """Predict from WAV bytes, an audio file path, or a waveform (with its sample rate)."""
        if isinstance(audio, np.ndarray):
            feats = features_of_waveform(
                audio, sample_rate or self.features.sample_rate, self.features
            )
        else:
            feats = features_of(audio, self.features)
        return self.explain(self.probabilities(feats[np.newaxis])[0])

    def explain(self, probs: np.ndarray) -> Prediction:
        """Turn a probability vector into a Prediction."""
        best = int(np.argmax(probs))
        return Prediction(
            label=self.labels[best],
            confidence=float(probs[best]),
            probabilities={label: float(p) for label, p in zip(self.labels, probs, strict=True)},
        )
