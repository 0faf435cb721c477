"""Prometheus metrics of the inference service (exposed on /metrics with KServe's own).

With several worker processes (`kws serve --workers N`) prometheus_client runs in multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, set by the supervisor before any worker imports it): counters
and histograms are summed over the workers by MultiProcessCollector. What a worker serves and
its drift window are not counters: each worker writes them to a small state file in the same
folder, and the worker that answers a scrape merges the files of the live workers
(WorkersCollector): `kws_model_info` names every version a live worker serves, and the drift
scores are the PSI of the workers' windows added together, so they appear once.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from kws.drift import MIN_REQUESTS, THRESHOLDS, DriftWindow, scores_of
from kws.serving.source import ModelRef

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STATE_PREFIX = "kws_worker_"
STATE_SECONDS = 1.0  # how stale another worker's drift counts may be in a scrape

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
MODEL_INFO_HELP = "The model being served (value 1)"
DRIFT_SCORE_HELP = (
    "PSI of a statistic over the drift window vs the model's reference (NaN until the "
    "window holds enough requests; absent for models without a reference)"
)
DRIFT_THRESHOLD_HELP = "Drift score above which a statistic has drifted"
DRIFT_WINDOW_HELP = "Requests in the drift window"
RELOADS = Counter("kws_model_reloads_total", "Model reloads by result", ["result"])


def multiprocess() -> bool:
    """Whether prometheus_client shares metrics between worker processes."""
    return bool(os.environ.get(MULTIPROC_ENV))


class _Gauges:
    """The single-process gauges (multiprocess mode derives them from worker state files)."""

    def __init__(self) -> None:
        self.model_info = Gauge(
            "kws_model_info", MODEL_INFO_HELP, ["name", "version", "alias", "source"]
        )
        self.drift_score = Gauge("kws_drift_score", DRIFT_SCORE_HELP, ["statistic"])
        self.drift_threshold = Gauge("kws_drift_threshold", DRIFT_THRESHOLD_HELP, ["statistic"])
        self.drift_window = Gauge("kws_drift_window_requests", DRIFT_WINDOW_HELP)


_gauges: _Gauges | None = None
_worker: WorkerState | None = None


def _single() -> _Gauges:
    global _gauges
    if _gauges is None:
        _gauges = _Gauges()
    return _gauges


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
    if _worker is not None:
        _worker.serve(ref, source)
        return
    gauge = _single().model_info
    gauge.clear()
    gauge.labels(name=ref.name, version=ref.version, alias=ref.alias or "", source=source).set(1)


def watch_drift(window: DriftWindow | None) -> None:
    """Export this window's scores (computed when scraped) and thresholds; none without one."""
    if _worker is not None:
        _worker.watch(window)
        return
    gauges = _single()
    gauges.drift_score.clear()
    gauges.drift_threshold.clear()
    if window is None:
        gauges.drift_window.set(0)
        return
    gauges.drift_window.set_function(lambda: len(window))
    for name in window.names:
        gauges.drift_score.labels(statistic=name).set_function(
            lambda name=name: window.scores().get(name, math.nan)  # type: ignore[misc]
        )
        gauges.drift_threshold.labels(statistic=name).set(THRESHOLDS[name])


# --- several worker processes ---------------------------------------------------------------
class WorkerState:
    """What this worker serves and its drift counts, written to a file the other workers read."""

    def __init__(self, folder: Path, min_requests: int = MIN_REQUESTS) -> None:
        self.folder = folder
        self.path = folder / f"{STATE_PREFIX}{os.getpid()}.json"
        self.min_requests = min_requests
        self.model: dict[str, Any] | None = None
        self.window: DriftWindow | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def serve(self, ref: ModelRef, source: str) -> None:
        """Record the model this worker now answers with (written at once)."""
        self.model = {**ref.to_dict(), "source": source}
        self.write()

    def watch(self, window: DriftWindow | None) -> None:
        """Count drift in this window from now on (a new model starts a new window)."""
        self.window = window
        self.write()

    def snapshot(self) -> dict[str, Any]:
        """This worker's state as written to its file."""
        drift = None
        if self.window is not None:
            n, counts = self.window.counts()
            drift = {"n": n, "counts": counts}
        return {"pid": os.getpid(), "model": self.model, "drift": drift}

    def write(self) -> None:
        """Replace the state file atomically (readers never see half a file)."""
        with self._lock:
            scratch = self.path.with_suffix(".tmp")
            scratch.write_text(json.dumps(self.snapshot()))
            os.replace(scratch, self.path)

    def start(self) -> None:
        """Rewrite the file every STATE_SECONDS so other workers see fresh drift counts."""

        def loop() -> None:
            while not self._stopped.wait(STATE_SECONDS):
                try:
                    self.write()
                except OSError:  # the folder went away: the server is stopping
                    return

        threading.Thread(target=loop, name="kws-worker-state", daemon=True).start()

    def others(self) -> list[dict[str, Any]]:
        """The states of the other live workers."""
        states = []
        for path in self.folder.glob(f"{STATE_PREFIX}*.json"):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):  # removed while reading: that worker stopped
                continue
            pid = int(state.get("pid", 0))
            if pid != os.getpid() and _alive(pid):
                states.append(state)
        return states


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkersCollector(Collector):
    """kws_model_info and the drift gauges over all live workers (read when scraped)."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        own = self.state.snapshot()
        states = [own, *self.state.others()]
        info = GaugeMetricFamily(
            "kws_model_info", MODEL_INFO_HELP, labels=["name", "version", "alias", "source"]
        )
        served = {
            tuple(str(s["model"].get(k) or "") for k in ("name", "version", "alias", "source"))
            for s in states
            if s.get("model")
        }
        for labels in sorted(served):
            info.add_metric(list(labels), 1)
        yield info
        yield GaugeMetricFamily(
            "kws_serving_workers", "Worker processes serving requests", value=len(states)
        )
        yield from self._drift(own, states)

    def _drift(self, own: dict[str, Any], states: list[dict[str, Any]]) -> Iterator[Metric]:
        """PSI of the windows of the workers serving this worker's version, added together."""
        window = self.state.window
        version = (own.get("model") or {}).get("version")
        same = [
            s["drift"]
            for s in states
            if s.get("drift") and (s.get("model") or {}).get("version") == version
        ]
        if window is None or not same:
            yield GaugeMetricFamily("kws_drift_window_requests", DRIFT_WINDOW_HELP, value=0)
            return
        n = sum(int(d["n"]) for d in same)
        counts = {
            name: [sum(d["counts"][name][i] for d in same) for i in range(len(bins))]
            for name, bins in same[0]["counts"].items()
        }
        scores = scores_of(window.reference, n, counts, self.state.min_requests)
        score = GaugeMetricFamily("kws_drift_score", DRIFT_SCORE_HELP, labels=["statistic"])
        threshold = GaugeMetricFamily(
            "kws_drift_threshold", DRIFT_THRESHOLD_HELP, labels=["statistic"]
        )
        for name in window.names:
            score.add_metric([name], scores.get(name, math.nan))
            threshold.add_metric([name], THRESHOLDS[name])
        yield score
        yield threshold
        yield GaugeMetricFamily("kws_drift_window_requests", DRIFT_WINDOW_HELP, value=n)


def start_worker_state(min_requests: int = MIN_REQUESTS) -> WorkerState:
    """Multiprocess mode in this worker: its state file, kept fresh from now on."""
    global _worker
    _worker = WorkerState(Path(os.environ[MULTIPROC_ENV]), min_requests)
    _worker.start()
    return _worker


def multiprocess_registry(state: WorkerState) -> CollectorRegistry:
    """The metrics of all workers: prometheus_client's files and the workers' state files."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(WorkersCollector(state))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of a registry."""
    return generate_latest(registry)
