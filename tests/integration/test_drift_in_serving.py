"""Drift monitoring end to end: a package exported with its reference, served by the real
`kws serve`, fed clean clips of an unseen speaker and then shifted audio (white noise at
10 dB SNR, -20 dB gain, a pitch shift); the drift scores it exports cross their thresholds
only for the shifted traffic, and `kws monitor report` prints them."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from kws.audio import decode
from kws.monitoring import parse_metrics
from tests.conftest import hermetic_environment, run_kws, run_stages
from tests.helpers import wav_bytes, write_params
from tests.integration.test_mlflow import free_port, stop, wait_for

pytestmark = pytest.mark.slow
WINDOW = 200


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, fsdd_dir: Path) -> Path:
    """A small trained and exported project (enough validation clips for a reference)."""
    folder = tmp_path_factory.mktemp("drift")
    write_params(
        folder,
        data={"max_per_class": 24, "synthetic_voices": 0, "fsdd_source": str(fsdd_dir)},
        train={"epochs": 3, "batch_size": 16},
        registry={"register": False},
    )
    run_stages(folder)
    return folder


def start(package: Path, cwd: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = cwd / f"serve-{port}.log"
    process = subprocess.Popen(
        [
            *(str(Path(sys.executable).with_name("kws")), "serve", "--model", str(package)),
            *("--port", str(port), "--drift-window", str(WINDOW)),
        ],
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=hermetic_environment(),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/v2/health/ready", process)
    return process, url, log


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[str]:
    process, url, _ = start(project / "models" / "package", project)
    try:
        yield url
    finally:
        stop(process)


def unseen_speaker_clips(project: Path) -> list[tuple[np.ndarray, int]]:
    """WAVs of the test-split speaker, whom neither training nor the reference has heard."""
    with (project / "data/prepared/manifest.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row["split"] == "test"]
    (speaker,) = {row["speaker"] for row in rows}
    per_digit = WINDOW // 10  # FSDD names files <digit>_<speaker>_<take>.wav
    recordings = sorted(
        path
        for path in (project / "data/raw").rglob(f"*_{speaker}_*.wav")
        if int(path.stem.rsplit("_", 1)[1]) < per_digit
    )
    assert len(recordings) == WINDOW
    return [decode(path) for path in recordings]


def white_noise_10db(wave: np.ndarray, rate: int) -> np.ndarray:
    noise = np.random.default_rng(0).standard_normal(wave.size).astype(np.float32)
    return wave + noise * np.sqrt(np.mean(wave**2) / 10 / np.mean(noise**2))


def gain_minus_20db(wave: np.ndarray, rate: int) -> np.ndarray:
    return wave * np.float32(0.1)


def pitch_up_4_semitones(wave: np.ndarray, rate: int) -> np.ndarray:
    import warnings

    import librosa

    with warnings.catch_warnings():  # its default n_fft exceeds the shortest clips: harmless
        warnings.simplefilter("ignore", UserWarning)
        return librosa.effects.pitch_shift(wave, sr=rate, n_steps=4).astype(np.float32)


SHIFTS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "noise at 10 dB SNR": white_noise_10db,
    "-20 dB gain": gain_minus_20db,
    "pitch +4 semitones": pitch_up_4_semitones,
}
MEASURED: dict[str, dict[str, float]] = {}


def send_window(url: str, clips: list[tuple[np.ndarray, int]]) -> dict[str, float]:
    """POST a full window of clips, then read the drift scores from /metrics."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for wave, rate in clips:
            body = wav_bytes(np.clip(wave, -1, 1), rate)
            response = client.post("/predict", content=body, headers={"Content-Type": "audio/wav"})
            assert response.status_code == 200, response.text
        reading = parse_metrics(client.get("/metrics").text)
    assert reading.window == WINDOW
    return {row.statistic: row.score for row in reading.rows}


def drifted(url: str) -> list[str]:
    with httpx.Client(base_url=url) as client:
        return parse_metrics(client.get("/metrics").text).drifted


def test_the_package_carries_a_reference_of_every_statistic(project: Path) -> None:
    import json

    reference = json.loads((project / "models/package/reference.json").read_text())
    stats = reference["statistics"]
    assert set(stats) == {
        "duration_seconds",
        "rms_dbfs",
        "spectral_centroid_hz",
        "spectral_flatness_db",
        "confidence",
        "label",
    }
    labels = json.loads((project / "models/package/labels.json").read_text())
    assert stats["label"]["labels"] == labels and len(labels) == 10
    assert "val predictions" in stats["confidence"]["source"]
    assert all(sum(s["counts"]) > 0 for s in stats.values())


def test_clean_clips_of_an_unseen_speaker_raise_no_drift(server: str, project: Path) -> None:
    scores = send_window(server, unseen_speaker_clips(project))
    MEASURED["clean"] = scores
    assert drifted(server) == [], scores


@pytest.mark.parametrize("shift", list(SHIFTS))
def test_shifted_audio_crosses_the_drift_threshold(server: str, project: Path, shift: str) -> None:
    clips = [(SHIFTS[shift](wave, rate), rate) for wave, rate in unseen_speaker_clips(project)]
    scores = send_window(server, clips)
    MEASURED[shift] = scores
    assert drifted(server), scores
    send_window(server, unseen_speaker_clips(project))  # clean again: the alarm clears
    assert drifted(server) == []


def test_kws_monitor_report_prints_statistic_psi_threshold_and_status(
    server: str, project: Path
) -> None:
    report = run_kws(project, "monitor", "report", "--from", f"{server}/metrics").stdout
    lines = report.splitlines()
    assert lines[1].split() == ["statistic", "psi", "threshold", "status"]
    assert lines[2].split()[0] == "duration_seconds" and lines[2].split()[-1] == "ok"
    assert lines[-1] == f"no drift (window: {WINDOW} requests)"
    saved = project / "metrics.txt"
    saved.write_text(httpx.get(f"{server}/metrics").text)
    assert (
        run_kws(project, "monitor", "report", "--from", str(saved)).stdout.splitlines()[2:]
        == lines[2:]
    )
    print("measured PSI per window:", MEASURED)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("http://127.0.0.1:9/metrics", "cannot connect"),
        ("missing.txt", "no such file"),
        ("params.yaml", "not a kws predictor's /metrics"),
    ],
)
def test_kws_monitor_report_rejects_bad_sources_in_one_line(
    project: Path, source: str, message: str
) -> None:
    proc = run_kws(project, "monitor", "report", "--from", source, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_package_without_a_reference_still_serves_without_drift_gauges(
    project: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old-package"
    shutil.copytree(project / "models" / "package", old)
    (old / "reference.json").unlink()
    process, url, log = start(old, tmp_path)
    try:
        clip, rate = unseen_speaker_clips(project)[0]
        response = httpx.post(
            f"{url}/predict", content=wav_bytes(clip, rate), headers={"Content-Type": "audio/wav"}
        )
        assert response.status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert "kws_requests_total" in metrics
        assert "kws_drift_score{" not in metrics
        assert "kws_drift_window_requests 0.0" in metrics
    finally:
        stop(process)
    assert "no drift reference" in log.read_text()


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="no prometheus binary (Debian: apt-get install prometheus)",
)
def test_a_real_prometheus_scrapes_the_scores_and_kws_monitor_report_reads_them(
    server: str, project: Path, tmp_path: Path
) -> None:
    """Debian's Prometheus scrapes the predictor and evaluates the rules; the report read
    through its query API equals the one read from /metrics, and every expression of the
    dashboard and the rules (alerts as the series they compare) returns data."""
    import time

    import yaml

    from kws.dashboard import RULES_FILE, promql_expressions

    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": "kws-predictor",
                "static_configs": [{"targets": [server.removeprefix("http://")]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            *("prometheus", f"--config.file={tmp_path / 'prometheus.yml'}"),
            *(f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    prometheus = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{prometheus}/-/ready", process)
        clips = unseen_speaker_clips(project)
        expressions = promql_expressions(measured=True)
        empty = list(expressions)
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=prometheus) as client:
            while empty and time.monotonic() < deadline:
                wave, rate = clips[int(time.monotonic() * 10) % len(clips)]
                httpx.post(
                    f"{server}/predict",
                    content=wav_bytes(wave, rate),
                    headers={"Content-Type": "audio/wav"},
                )
                time.sleep(0.2)
                empty = [
                    name
                    for name in empty
                    if not client.get("/api/v1/query", params={"query": expressions[name]}).json()[
                        "data"
                    ]["result"]
                ]
        assert empty == []
        through_prometheus = run_kws(project, "monitor", "report", "--from", prometheus).stdout
        direct = run_kws(project, "monitor", "report", "--from", f"{server}/metrics").stdout
        assert [line.split()[0] for line in through_prometheus.splitlines()[2:-1]] == [
            line.split()[0] for line in direct.splitlines()[2:-1]
        ]
    finally:
        stop(process)
