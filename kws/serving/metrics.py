"""Prometheus metrics of the inference service (exposed on /metrics with KServe's own)."""

from __future__ import annotations

import math

from prometheus_client import Counter, Gauge, Histogram

from kws.drift import THRESHOLDS, DriftWindow
from kws.serving.source import ModelRef

REQUESTS = Counter(
    "kws_requests_total",
    "HTTP requests by route, status and model version",
    ["route", "status", "model_version"],
)
LATENCY = Histogram(
    "kws_request_latency_seconds",
    "Request latency by route",
    ["route"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PREDICTIONS = Counter(
    "kws_predictions_total", "Predictions by label and model version", ["label", "model_version"]
)
CONFIDENCE = Histogram(
    "kws_prediction_confidence",
    "Top-1 confidence of predictions",
    ["model_version"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
INPUT_DURATION = Histogram(
    "kws_input_duration_seconds",
    "Duration of the audio received (drift signal)",
    buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
)
INPUT_RMS = Histogram(
    "kws_input_rms",
    "RMS level of the audio received, full scale = 1 (drift signal)",
    buckets=(0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
)
MODEL_INFO = Gauge(
    "kws_model_info", "The model being served (value 1)", ["name", "version", "alias", "source"]
)
RELOADS = Counter("kws_model_reloads_total", "Model reloads by result", ["result"])
DRIFT_SCORE = Gauge(
    "kws_drift_score",
    "PSI of a statistic over the drift window vs the model's reference (NaN until the "
    "window holds enough requests; absent for models without a reference)",
    ["statistic"],
)
DRIFT_THRESHOLD = Gauge(
    "kws_drift_threshold", "Drift score above which a statistic has drifted", ["statistic"]
)
DRIFT_WINDOW = Gauge("kws_drift_window_requests", "Requests in the drift window")


def observe_input(duration_s: float, rms: float) -> None:
    """Record what the audio looked like."""
    INPUT_DURATION.observe(duration_s)
    INPUT_RMS.observe(rms)


def observe_prediction(label: str, confidence: float, version: str) -> None:
    """Record one prediction."""
    PREDICTIONS.labels(label=label, model_version=version).inc()
    CONFIDENCE.labels(model_version=version).observe(confidence)


def set_model_info(ref: ModelRef, source: str) -> None:
    """Make the gauge name exactly the model now served."""
    MODEL_INFO.clear()
    MODEL_INFO.labels(name=ref.name, version=ref.version, alias=ref.alias or "", source=source).set(
        1
    )


def watch_drift(window: DriftWindow | None) -> None:
    """Export this window's scores (computed when scraped) and thresholds; none without one."""
    DRIFT_SCORE.clear()
    DRIFT_THRESHOLD.clear()
    if window is None:
        DRIFT_WINDOW.set(0)
        return
    DRIFT_WINDOW.set_function(lambda: len(window))
    for name in window.names:
        DRIFT_SCORE.labels(statistic=name).set_function(
            lambda name=name: window.scores().get(name, math.nan)  # type: ignore[misc]
        )
        DRIFT_THRESHOLD.labels(statistic=name).set(THRESHOLDS[name])
