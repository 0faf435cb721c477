"""Predictor: a model package in, label + confidence + top-k out. No TensorFlow needed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np

from kws.audio import AudioSource
from kws.errors import ModelPackageError
from kws.export import FEATURES_FILE, LABELS_FILE, METADATA_FILE, TFLITE_FILE
from kws.features import features_of, features_of_waveform
from kws.params import FeatureParams


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
    """What the model says about one clip."""

    label: str
    confidence: float
    top_k: list[dict[str, float | str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


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
        root = Path(package_dir)
        missing = [n for n in (TFLITE_FILE, LABELS_FILE, FEATURES_FILE) if not (root / n).is_file()]
        if not root.is_dir() or missing:
            raise ModelPackageError(
                f"{root} is not a model package (missing: {', '.join(missing) or 'folder'})"
            )
        try:
            labels = json.loads((root / LABELS_FILE).read_text())
            features = FeatureParams(**json.loads((root / FEATURES_FILE).read_text()))
            meta_file = root / METADATA_FILE
            metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        except (ValueError, TypeError) as exc:
            raise ModelPackageError(f"{root}: malformed package metadata ({exc})") from exc
        return cls((root / TFLITE_FILE).read_bytes(), labels, features, metadata, num_threads)

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
        self, audio: AudioSource | np.ndarray, sample_rate: int | None = None, top_k: int = 3
    ) -> Prediction:
        """Predict from WAV bytes, an audio file path, or a waveform (with its sample rate)."""
        if isinstance(audio, np.ndarray):
            feats = features_of_waveform(
                audio, sample_rate or self.features.sample_rate, self.features
            )
        else:
            feats = features_of(audio, self.features)
        return self.explain(self.probabilities(feats[np.newaxis])[0], top_k)

    def explain(self, probs: np.ndarray, top_k: int = 3) -> Prediction:
        """Turn a probability vector into a Prediction."""
        order = np.argsort(probs)[::-1][: max(1, top_k)]
        return Prediction(
            label=self.labels[int(order[0])],
            confidence=float(probs[order[0]]),
            top_k=[{"label": self.labels[int(i)], "probability": float(probs[i])} for i in order],
        )
