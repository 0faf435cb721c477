"""Drift statistics, PSI, the rolling window, the package reference and reading scores back."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from kws import drift
from kws.drift import DriftRow, DriftWindow, Reference, build_reference, input_statistics, psi
from kws.errors import ModelPackageError
from kws.monitoring import MonitoringError, parse_metrics, read_drift
from tests.helpers import tone

LABELS = ["yes", "no"]


def speechlike(seconds: float = 0.5, rate: int = 16000, level: float = 0.1) -> np.ndarray:
    return tone(seconds, rate, 300.0) * np.float32(level / 0.5 * np.sqrt(2))


def reference_of(waves: list[np.ndarray], rate: int = 16000) -> Reference:
    inputs = [input_statistics(w, rate) for w in waves]
    return build_reference(inputs, [0.95] * len(waves), ["yes"] * len(waves), LABELS, {})


def test_input_statistics_measure_duration_level_and_spectrum() -> None:
    stats = input_statistics(speechlike(0.5, 16000, level=0.1), 16000)
    assert stats["duration_seconds"] == pytest.approx(0.5)
    assert stats["rms_dbfs"] == pytest.approx(-20.0, abs=0.1)
    assert stats["spectral_centroid_hz"] == pytest.approx(300, rel=0.05)
    noise = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    assert input_statistics(noise, 16000)["spectral_flatness_db"] > -3  # white: ~0 dB
    assert stats["spectral_flatness_db"] < -30  # a tone: far from flat
    silent = input_statistics(np.zeros(1600, dtype=np.float32), 16000)
    assert all(math.isfinite(v) for v in silent.values())


def test_psi_is_zero_for_equal_histograms_symmetric_and_grows_with_the_shift() -> None:
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert psi([50, 50, 0], [0, 50, 50]) == pytest.approx(psi([0, 50, 50], [50, 50, 0]))
    small, large = psi([50, 50, 0], [40, 60, 0]), psi([50, 50, 0], [0, 50, 50])
    assert 0 < small < drift.INPUT_THRESHOLD < large
    # an empty bin counts as epsilon, not as infinitely surprising
    assert math.isfinite(psi([100, 0], [0, 100]))
    with pytest.raises(ValueError, match="differ in bins"):
        psi([1, 2], [1, 2, 3])


def test_the_window_scores_only_when_filled_and_forgets_the_oldest_requests() -> None:
    reference = reference_of([speechlike(level=0.1) for _ in range(20)])
    window = DriftWindow(reference, size=10, min_requests=5)
    loud = input_statistics(speechlike(level=0.1), 16000)
    quiet = input_statistics(speechlike(level=0.001), 16000)  # -60 dB: two level bins down
    for _ in range(4):
        window.add(quiet, 0.95, "yes")
    assert window.scores() == {} and len(window) == 4
    for _ in range(6):
        window.add(quiet, 0.95, "yes")
    assert window.scores()["rms_dbfs"] > 1
    for _ in range(10):  # the quiet requests fall out of the window
        window.add(loud, 0.95, "yes")
    scores = window.scores()
    assert len(window) == 10 and scores["rms_dbfs"] == pytest.approx(0.0)
    assert set(scores) == set(drift.STATISTIC_NAMES)
    window.add(loud, 0.95, "unknown-label")  # counted nowhere, no error
    assert window.scores()["label"] == pytest.approx(0.0)


def test_the_reference_round_trips_through_the_package_and_keeps_its_bins(tmp_path: Path) -> None:
    reference = reference_of([speechlike() for _ in range(3)])
    drift.write_reference(reference, tmp_path)
    assert drift.read_reference(tmp_path) == reference
    assert drift.read_reference(tmp_path / "missing") is None  # an older package
    (tmp_path / "reference.json").write_text('{"statistics": {"rms_dbfs": {"edges": [1]}}}')
    with pytest.raises(ModelPackageError, match="malformed drift reference"):
        drift.read_reference(tmp_path)


METRICS = """# HELP kws_drift_score PSI
# TYPE kws_drift_score gauge
kws_drift_score{statistic="rms_dbfs"} 4.25
kws_drift_score{statistic="duration_seconds"} 0.01
kws_drift_score{statistic="label"} NaN
kws_drift_threshold{statistic="rms_dbfs"} 0.2
kws_drift_threshold{statistic="duration_seconds"} 0.2
kws_drift_threshold{statistic="label"} 0.5
kws_drift_window_requests 200.0
kws_requests_total{model_version="1",route="/predict",status="200"} 3.0
"""


def test_scores_are_read_from_a_metrics_page_in_report_order() -> None:
    reading = parse_metrics(METRICS)
    assert [row.statistic for row in reading.rows] == ["duration_seconds", "rms_dbfs", "label"]
    assert reading.drifted == ["rms_dbfs"] and reading.window == 200 and reading.scored
    lines = drift.report_lines(reading.rows, reading.window)
    assert lines[2].split() == ["rms_dbfs", "4.250", "0.20", "drift"]
    assert lines[3].split() == ["label", "-", "0.50", "filling"]
    assert lines[-1] == "drift in rms_dbfs (window: 200 requests)"
    assert DriftRow("x", 0.1, 0.2).status == "ok"


def test_metrics_without_drift_scores_are_clear_errors() -> None:
    with pytest.raises(MonitoringError, match="no drift reference"):
        parse_metrics('kws_model_info{version="1"} 1.0\n')
    with pytest.raises(MonitoringError, match="not a kws predictor"):
        parse_metrics("process_cpu_seconds_total 3.0\n")


class _Pages(BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, tuple[int, str]]] = {}

    def do_GET(self) -> None:
        status, body = self.pages.get(self.path.split("?")[0], (404, "not found"))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_read_drift_takes_a_metrics_url_a_saved_file_and_rejects_bad_sources(
    http: str, tmp_path: Path
) -> None:
    _Pages.pages = {"/metrics": (200, METRICS), "/broken/metrics": (500, "oops")}
    assert read_drift(f"{http}/metrics").drifted == ["rms_dbfs"]
    saved = tmp_path / "metrics.txt"
    saved.write_text(METRICS)
    from_file, from_url = read_drift(str(saved)), read_drift(f"{http}/metrics")
    assert drift.report_lines(from_file.rows) == drift.report_lines(from_url.rows)
    with pytest.raises(MonitoringError, match="HTTP 500"):
        read_drift(f"{http}/broken/metrics")
    with pytest.raises(MonitoringError, match="no such file"):
        read_drift(str(tmp_path / "absent.txt"))
    _Pages.pages["/api/v1/query"] = (200, "<html>a web page</html>")
    with pytest.raises(MonitoringError, match="not a Prometheus query API"):
        read_drift(http)  # not /metrics: taken for a Prometheus server
    with pytest.raises(MonitoringError, match="cannot connect"):
        read_drift("http://127.0.0.1:9/metrics")


def test_read_drift_asks_a_prometheus_for_the_worst_score_per_statistic(http: str) -> None:
    def result(metric: dict[str, str], value: str) -> dict[str, object]:
        return {"metric": metric, "value": [0, value]}

    import json

    body = {"status": "success", "data": {"resultType": "vector", "result": []}}
    answers = {
        "score": [result({"statistic": "rms_dbfs"}, "0.7")],
        "threshold": [result({"statistic": "rms_dbfs"}, "0.2")],
        "window": [result({}, "150")],
    }

    class Prometheus(_Pages):
        def do_GET(self) -> None:
            query = self.path
            kind = (
                "score"
                if "kws_drift_score" in query
                else "threshold"
                if "kws_drift_threshold" in query
                else "window"
            )
            self.send_response(200)
            self.end_headers()
            payload = {**body, "data": {"resultType": "vector", "result": answers[kind]}}
            self.wfile.write(json.dumps(payload).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reading = read_drift(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert reading.drifted == ["rms_dbfs"] and reading.window == 150
