"""docs/captures/capture.py: which runs it compares, and that it leaves no process behind.

The screenshots themselves need Chromium and both servers (`make captures`); these tests
check the logic that decides what the pictures show and the process handling that must
hold even on errors and Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, load_script

capture = load_script("docs/captures/capture.py", "capture")


def run(
    run_id: str,
    name: str,
    start: int,
    experiment: str = "1",
    status: str = "FINISHED",
    **tags: str,
) -> dict[str, Any]:
    """A run as MLflow's REST API returns it."""
    return {
        "info": {
            "run_id": run_id,
            "run_name": name,
            "start_time": start,
            "experiment_id": experiment,
            "status": status,
        },
        "data": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }


def ids(selection: list[dict[str, str]]) -> list[str]:
    return [item["run_id"] for item in selection]


def test_compare_shows_registered_versions_then_newest_variations_then_best_trial() -> None:
    training = [run("v2", "kws-variant", 20), run("v1", "kws-baseline", 10), run("x", "dvc", 5)]
    versions = [{"version": "1", "run_id": "v1"}, {"version": "2", "run_id": "v2"}]
    variations = [
        run("d2", "float32", 40, "2"),  # newest first, as the search returns them
        run("n", "clip_1.0s", 35, "2"),
        run("d1", "float32", 32, "2"),
        run("b", "v1_baseline", 30, "2"),
        run("f", "fine_tune_2", 33, "2", status="FAILED"),
    ]
    tuning = [
        run("t1", "trial-1", 61, "3", **{"mlflow.parentRunId": "s2"}),
        run("t0", "trial-0", 60, "3", **{"mlflow.parentRunId": "s2"}),
        run("s2", "study-kws", 59, "3", best_trial="1"),
        run("old", "trial-1", 51, "3", **{"mlflow.parentRunId": "s1"}),
        run("s1", "study-kws", 50, "3", best_trial="1"),
    ]

    selection = capture.compare_selection(versions, training, variations, tuning)

    assert ids(selection) == ["v1", "v2", "b", "n", "d2", "t1"]
    assert [item["experiment_id"] for item in selection] == ["1", "1", "2", "2", "2", "3"]


def test_without_versions_variations_or_study_the_two_newest_training_runs_are_compared() -> None:
    training = [run("c", "third", 30), run("b", "second", 20), run("a", "first", 10)]
    assert ids(capture.compare_selection([], training, [], [])) == ["b", "c"]


def test_a_study_without_its_best_trial_run_adds_no_trial() -> None:
    tuning = [run("s", "study-kws", 50, "3", best_trial="4")]
    assert capture.best_trial(tuning) is None


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stopping_a_server_ends_its_whole_process_group_even_a_child_ignoring_sigterm(
    tmp_path: Path,
) -> None:
    # a "server" whose child ignores SIGTERM (as a stubborn worker would)
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "child = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "time.sleep(60)'\n"
        "subprocess.Popen([sys.executable, '-c', child])\n"
        "time.sleep(60)\n"
    )
    server = capture.start_server(
        "stubborn",
        [sys.executable, "-c", stubborn],
        "http://127.0.0.1:9",
        tmp_path / "stubborn.log",
        dict(os.environ),
    )
    time.sleep(1.0)  # the child is started
    assert group_alive(server.process.pid)

    started = time.monotonic()
    capture.stop_server(server, grace=1.0)

    assert not group_alive(server.process.pid)
    assert time.monotonic() - started < 10


def test_a_server_that_exits_at_start_is_one_error_with_its_last_log_line(tmp_path: Path) -> None:
    server = capture.start_server(
        "broken",
        [sys.executable, "-c", "import sys; print('port already in use'); sys.exit(3)"],
        "http://127.0.0.1:9",
        tmp_path / "broken.log",
        dict(os.environ),
    )
    with pytest.raises(capture.CaptureError, match=r"broken exited with 3: port already in use"):
        capture.wait_healthy(server, timeout=30)


def test_a_project_without_an_mlflow_store_fails_with_one_line_and_starts_nothing(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "docs/captures/capture.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: no MLflow store at {tmp_path / 'mlflow.db'}: run `make demo` first"
    )
    assert result.stdout == ""  # no "waiting for ... server" line: nothing was started
