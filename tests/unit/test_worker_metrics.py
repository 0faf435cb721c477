"""Several `kws serve` workers, one /metrics: what each worker serves and its drift window are
merged from the workers' state files (kws.serving.metrics.WorkersCollector)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kws.drift import DriftWindow, input_statistics
from kws.serving.metrics import WorkersCollector, WorkerState
from kws.serving.source import ModelRef
from tests.unit.test_drift import reference_of, speechlike

REFERENCE = reference_of([speechlike(level=0.1) for _ in range(20)])
V1 = ModelRef("kws", "1", "champion")


def window_of(levels: list[float]) -> DriftWindow:
    window = DriftWindow(REFERENCE, size=100, min_requests=5)
    for level in levels:
        window.add(input_statistics(speechlike(level=level), 16000), 0.9, "yes")
    return window


def other_worker(folder: Path, pid: int, ref: ModelRef, window: DriftWindow | None) -> None:
    """The state file another worker process (pid) writes."""
    state = WorkerState(folder)
    state.serve(ref, "models:/kws@champion")
    state.watch(window)
    state.path.unlink()
    snapshot = {**state.snapshot(), "pid": pid}
    (folder / f"kws_worker_{pid}.json").write_text(json.dumps(snapshot))


def collect(state: WorkerState) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        metric.name: [(s.labels, s.value) for s in metric.samples]
        for metric in WorkersCollector(state).collect()
    }


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(process.stdout)


def test_drift_scores_are_those_of_both_windows_added_together(tmp_path: Path) -> None:
    mine, theirs = [0.1] * 6, [0.001] * 4  # the other worker saw quiet requests
    state = WorkerState(tmp_path, min_requests=5)
    state.serve(V1, "models:/kws@champion")
    state.watch(window_of(mine))
    other_worker(tmp_path, os.getppid(), V1, window_of(theirs))  # a live process
    metrics = collect(state)
    together = window_of(mine + theirs).scores()
    assert metrics["kws_drift_window_requests"] == [({}, 10)]
    scores = {labels["statistic"]: value for labels, value in metrics["kws_drift_score"]}
    assert scores == pytest.approx(together)
    assert scores["rms_dbfs"] > window_of(mine).scores()["rms_dbfs"]  # the quiet ones count
    assert len(metrics["kws_drift_threshold"]) == len(scores)
    assert metrics["kws_serving_workers"] == [({}, 2)]


def test_below_the_minimum_fill_of_all_workers_together_the_scores_are_nan(
    tmp_path: Path,
) -> None:
    state = WorkerState(tmp_path, min_requests=5)
    state.serve(V1, "x")
    state.watch(window_of([0.1] * 2))
    other_worker(tmp_path, os.getppid(), V1, window_of([0.1] * 2))
    metrics = collect(state)
    assert metrics["kws_drift_window_requests"] == [({}, 4)]
    assert all(math.isnan(value) for _, value in metrics["kws_drift_score"])


def test_dead_workers_and_workers_on_another_version_are_left_out_of_the_drift(
    tmp_path: Path, dead_pid: int
) -> None:
    state = WorkerState(tmp_path, min_requests=5)
    state.serve(V1, "models:/kws@champion")
    state.watch(window_of([0.1] * 5))
    other_worker(tmp_path, dead_pid, V1, window_of([0.001] * 50))
    other_worker(tmp_path, os.getppid(), ModelRef("kws", "2", "champion"), window_of([0.1] * 7))
    metrics = collect(state)
    assert metrics["kws_drift_window_requests"] == [({}, 5)]
    versions = sorted(labels["version"] for labels, _ in metrics["kws_model_info"])
    assert versions == ["1", "2"]  # mid-swap: both versions answer, each named once
    assert metrics["kws_serving_workers"] == [({}, 2)]


def test_a_model_without_drift_reference_exports_an_empty_window_and_no_scores(
    tmp_path: Path,
) -> None:
    state = WorkerState(tmp_path)
    state.serve(V1, "x")
    state.watch(None)
    metrics = collect(state)
    assert metrics["kws_drift_window_requests"] == [({}, 0)]
    assert "kws_drift_score" not in metrics
    assert metrics["kws_model_info"] == [
        ({"name": "kws", "version": "1", "alias": "champion", "source": "x"}, 1)
    ]


def test_the_state_file_is_replaced_whole(tmp_path: Path) -> None:
    state = WorkerState(tmp_path)
    state.serve(V1, "x")
    state.watch(window_of([0.1] * 3))
    written = json.loads(state.path.read_text())
    assert written["pid"] == os.getpid() and written["drift"]["n"] == 3
    assert not list(tmp_path.glob("*.tmp"))
    assert np.sum(written["drift"]["counts"]["rms_dbfs"]) == 3
