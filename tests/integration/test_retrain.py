"""`kws retrain` end to end on a tiny config: it registers a challenger, promotes it only
when the gate finds it better (and then proposes a canary in the deploy values), refuses a
worse one, and does nothing when the predictor reports no drift."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from kws.audio import decode
from kws.drift import DriftWindow, input_statistics, read_reference
from kws.inference import Predictor
from kws.monitoring import parse_metrics
from kws.retrain import When, due
from kws.serving import metrics
from tests.conftest import run_kws
from tests.helpers import write_params

pytestmark = pytest.mark.slow
WEAK = ("--set", "train.learning_rate=0.000001")  # learns next to nothing in one epoch


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, fsdd_dir: Path) -> Path:
    """A project with the smoke run's tiny data and a weak first champion (v1)."""
    folder = tmp_path_factory.mktemp("retrain")
    write_params(
        folder,
        data={"max_per_class": 8, "synthetic_voices": 0, "fsdd_source": str(fsdd_dir)},
        train={"epochs": 2, "batch_size": 16},
    )
    (folder / "values.yaml").write_text(
        yaml.safe_dump({"versions": [{"name": "v1", "model": "models:/kws/1", "weight": 100}]})
    )
    first = run_kws(folder, "retrain", "--when", "always", *WEAK, "--report", "v1.json").stdout
    assert "registered version 1" in first and "the first version" in first
    return folder


def registered(project: Path) -> list[str]:
    out = run_kws(project, "registry", "list").stdout.splitlines()[1:]
    return [line.split()[0] for line in out]


def champion(project: Path) -> str:
    listing = run_kws(project, "registry", "list").stdout.splitlines()[1:]
    return next(line.split()[0] for line in listing if "champion" in line.split()[1])


def test_a_better_challenger_is_promoted_and_a_canary_proposed(project: Path) -> None:
    proc = run_kws(
        project,
        *("retrain", "--when", "schedule", "--canary-weight", "10"),
        *("--values", "values.yaml", "--state", "deploy-state", "--report", "v2.json"),
    )
    outcome = json.loads((project / "v2.json").read_text())
    assert outcome["retrained"] and outcome["reason"] == "scheduled run"
    assert outcome["version"] == "2" and outcome["promoted"], proc.stdout
    decision = outcome["decision"]
    assert decision["challenger_accuracy"] >= decision["champion_accuracy"] + decision["margin"]
    assert champion(project) == "2"
    values = yaml.safe_load((project / "values.yaml").read_text())
    assert values["versions"] == [
        {"name": "v1", "model": "models:/kws/1", "weight": 90},
        {"name": "v2", "model": "models:/kws/2", "weight": 10},
    ]
    history = run_kws(project, "deploy", "history", "--state", "deploy-state").stdout
    assert "Canary v2 at 10% (kws retrain)" in history


def test_a_worse_challenger_is_refused_and_the_values_stay(project: Path) -> None:
    values_before = (project / "values.yaml").read_text()
    run_kws(
        project,
        *("retrain", "--when", "always", *WEAK, "--canary-weight", "10"),
        *("--values", "values.yaml", "--state", "deploy-state", "--report", "v3.json"),
    )
    outcome = json.loads((project / "v3.json").read_text())
    assert outcome["version"] == "3" and not outcome["promoted"]
    assert outcome["decision"]["reason"].startswith("kept champion")
    assert champion(project) == "2"
    assert (project / "values.yaml").read_text() == values_before
    assert outcome["canary"] is None


def metrics_of_reference_like_traffic(project: Path, gain: float = 1.0) -> str:
    """/metrics text of the serving metrics after a window of the clips the reference was
    made of (the train and validation splits), each clip scaled by gain."""
    package = project / "models" / "package"
    predictor, reference = Predictor.from_path(package), read_reference(package)
    assert reference is not None
    with (project / "data" / "prepared" / "manifest.csv").open() as f:
        paths = [row["path"] for row in csv.DictReader(f) if row["split"] in ("train", "val")]
    window = DriftWindow(reference, size=len(paths), min_requests=len(paths))
    for path in paths:
        wave, rate = decode(project / path)  # a relative path is the project's
        wave = (wave * gain).astype(np.float32)
        prediction = predictor.predict(wave, rate)
        window.add(input_statistics(wave, rate), prediction.confidence, prediction.label)
    metrics.watch_drift(window)
    return generate_latest(REGISTRY).decode()


def test_a_drift_free_service_triggers_nothing(project: Path) -> None:
    before = registered(project)
    clean = project / "clean-metrics.txt"
    clean.write_text(metrics_of_reference_like_traffic(project))
    assert parse_metrics(clean.read_text()).drifted == []
    proc = run_kws(project, "retrain", "--when", "drift", "--drift-source", str(clean))
    assert proc.stdout.strip() == "nothing to do: no drift"
    assert registered(project) == before


def test_drift_is_what_makes_a_drift_retrain_due(project: Path) -> None:
    quiet = project / "quiet-metrics.txt"
    quiet.write_text(metrics_of_reference_like_traffic(project, gain=0.01))  # -40 dB
    go, reason = due(When.drift, str(quiet))
    assert go and reason.startswith("drift in ") and "rms_dbfs" in reason


def test_bad_retrain_arguments_are_one_line_errors(project: Path) -> None:
    for args, message in [
        (("--when", "sometimes"), "--when 'sometimes'"),
        (("--when", "drift"), "needs --drift-source"),
        (("--when", "always", "--canary-weight", "10"), "needs --values"),
    ]:
        proc = run_kws(project, "retrain", *args, check=False)
        assert proc.returncode == 1 and proc.stderr.startswith("error: "), proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
