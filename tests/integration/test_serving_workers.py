"""`kws serve --workers 2`: two real worker processes behind one port, one /metrics for both."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_kws
from tests.integration.test_serving import champion_server

pytestmark = pytest.mark.slow
PREDICTS = 60  # above the drift window's minimum fill (50), so the scores are numbers


class Workers:
    """A running `kws serve --workers 2`."""

    def __init__(self, url: str, project: Path, process: subprocess.Popen, metrics: Path) -> None:
        self.url, self.project, self.process, self.metrics = url, project, process, metrics

    def post(self, sample: bytes) -> httpx.Response:
        """/predict on a new connection, so the kernel may hand it to either worker."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            return client.post("/predict", content=sample, headers={"Content-Type": "audio/wav"})

    def children(self) -> set[int]:
        """The worker pids: the supervisor's children, less multiprocessing's resource tracker."""
        pids = set()
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"resource_tracker" not in cmdline:
                    pids.add(int(pid))
        return pids


@pytest.fixture(scope="module")
def workers(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """The champion served by two workers, their metrics in a multiprocess folder."""
    folder = tmp_path_factory.mktemp("workers")
    metrics = folder / "project" / "prometheus"
    env = {
        "KWS_SERVE_WORKERS": "2",
        "KWS_ADMIN_TOKEN": "token",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    with champion_server(tiny_project, folder, env) as (url, project, process):
        yield Workers(url, project, process, metrics)


def metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(rf"{name}(\{{| )", line)]


def value(line: str) -> float:
    return float(line.rsplit(" ", 1)[1])


def test_both_workers_answer_and_metrics_count_every_request_once(
    workers: Workers, sample: bytes
) -> None:
    answered = [workers.post(sample) for _ in range(PREDICTS)]
    assert all(r.status_code == 200 for r in answered)
    pids = {int(r.headers["x-kws-worker"]) for r in answered}
    assert pids == workers.children() and len(pids) == 2
    time.sleep(1.5)  # each worker rewrites its drift counts every second
    text = httpx.get(f"{workers.url}/metrics").text
    predicts = [line for line in metric_lines(text, "kws_requests_total") if "/predict" in line]
    assert sum(value(line) for line in predicts) == PREDICTS
    assert value(metric_lines(text, "kws_serving_workers")[0]) == 2
    info = metric_lines(text, "kws_model_info")
    assert len(info) == 1 and 'version="1"' in info[0] and 'alias="champion"' in info[0]


def test_drift_gauges_appear_once_over_the_windows_of_both_workers(
    workers: Workers, sample: bytes
) -> None:
    text = httpx.get(f"{workers.url}/metrics").text
    scores = metric_lines(text, "kws_drift_score")
    statistics = [re.search(r'statistic="(\w+)"', line)[1] for line in scores]  # type: ignore[index]
    assert statistics and len(statistics) == len(set(statistics))
    assert len(metric_lines(text, "kws_drift_threshold")) == len(statistics)
    assert all(math.isfinite(value(line)) for line in scores)
    assert [value(line) for line in metric_lines(text, "kws_drift_window_requests")] == [PREDICTS]


def test_every_worker_swaps_to_the_promoted_version_on_its_own_poll(
    workers: Workers, sample: bytes
) -> None:
    run_kws(workers.project, "export")  # registers version 2
    run_kws(workers.project, "registry", "promote", "2")
    deadline = time.monotonic() + 30
    latest: dict[int, str] = {}
    while time.monotonic() < deadline and not (len(latest) == 2 and set(latest.values()) == {"2"}):
        response = workers.post(sample)
        assert response.status_code == 200
        latest[int(response.headers["x-kws-worker"])] = response.json()["model"]["version"]
    assert set(latest.values()) == {"2"} and len(latest) == 2
    time.sleep(1.5)
    info = metric_lines(httpx.get(f"{workers.url}/metrics").text, "kws_model_info")
    assert len(info) == 1 and 'version="2"' in info[0]


def test_admin_reload_is_refused_as_it_would_reach_one_worker_only(workers: Workers) -> None:
    response = httpx.post(f"{workers.url}/admin/reload", headers={"Authorization": "Bearer token"})
    assert response.status_code == 409 and "registry alias" in response.json()["error"]


def test_sigterm_stops_every_worker_and_removes_nothing_it_did_not_make(
    workers: Workers,
) -> None:
    pids = workers.children()
    os.kill(workers.process.pid, signal.SIGTERM)
    assert workers.process.wait(timeout=30) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert workers.metrics.is_dir()  # the operator's folder stays (emptied at the next start)


def test_workers_that_cannot_load_the_model_are_one_error_line(tmp_path: Path) -> None:
    proc = run_kws(
        tmp_path, "serve", "--model", str(tmp_path / "nothing"), "--workers", "2", check=False
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "nothing" in lines[-1]
    assert "Traceback" not in proc.stderr
