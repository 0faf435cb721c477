"""Optuna: a study runs, resumes from its storage, nests its trials in MLflow, writes params."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kws.params import load_params, resolve_params
from kws.tune import study_name_for
from tests.conftest import TINY, run_kws
from tests.helpers import write_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned_project(tmp_path_factory: pytest.TempPathFactory, fsdd_dir: Path) -> Path:
    project = tmp_path_factory.mktemp("tune")
    write_params(
        project, data={**TINY, "fsdd_source": str(fsdd_dir)}, train={"epochs": 2, "batch_size": 16}
    )
    run_kws(project, "data", "fetch")
    run_kws(project, "data", "prepare")
    run_kws(project, "tune", "--trials", "2", "--output", "tuned.yaml", "--plots", "plots")
    run_kws(project, "tune", "--trials", "1", "--output", "tuned.yaml", "--plots", "plots")
    return project


def test_a_resumed_study_has_all_trials_in_its_storage(tuned_project: Path) -> None:
    import optuna

    name = study_name_for(load_params(tuned_project / "params.yaml"))
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tuned_project}/optuna.db")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state.is_finished() for t in study.trials)
    assert study.user_attrs["mlflow_parent_run_id"]
    commands = study.user_attrs["commands"]
    assert len(commands) == 2 and commands[0].startswith("kws tune --trials 2")


def test_trials_are_mlflow_runs_nested_under_one_study_run(
    tuned_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tuned_project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("kws-tuning")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "optuna_study" in r.data.tags]
    trials = [r for r in runs if "optuna_trial" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["optuna_trial"] for r in trials) == ["0", "1", "2"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    assert all("best_val_accuracy" in r.data.metrics for r in trials)
    complete = [r for r in trials if r.data.tags["optuna_state"] == "COMPLETE"]
    assert complete and all("tflite_test_accuracy" in r.data.metrics for r in complete)
    assert all(r.data.tags["kws_command"].startswith("kws tune") for r in trials)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "plots")}
    assert "plots/optuna_history.png" in artifacts


def test_best_params_file_is_an_overlay_of_the_searched_settings(tuned_project: Path) -> None:
    text = (tuned_project / "tuned.yaml").read_text()
    assert text.startswith("# Best trial")
    overlay = yaml.safe_load(text)
    assert set(overlay) <= {"model", "train"}  # the head and training settings only
    assert set(overlay["train"]) <= {"learning_rate", "epochs", "label_smoothing"}
    params = resolve_params(tuned_project / "params.yaml", None, [tuned_project / "tuned.yaml"])
    assert 3e-4 <= params.train.learning_rate <= 1e-2
    assert params.model.architecture == "speech_embedding" and 0 <= params.model.fine_tune <= 2
    assert (tuned_project / "plots" / "optuna_history.png").is_file()


def test_report_compare_includes_the_best_trial(tuned_project: Path) -> None:
    out = run_kws(tuned_project, "report", "compare", "--output", "report/comparison.md")
    table = (tuned_project / "report/comparison.md").read_text()
    assert "optuna best (trial" in table and "optuna best" in out.stdout
    assert "`kws tune --trials 2" in table and str(tuned_project) not in table
    csv = (tuned_project / "report/comparison.csv").read_text().splitlines()
    assert csv[0].startswith("run,changes,test_accuracy_tflite,test_macro_f1_tflite")


def test_failing_trials_are_recorded_as_failed_and_the_study_goes_on(tuned_project: Path) -> None:
    import optuna

    proc = run_kws(
        tuned_project,
        "tune",
        "--trials",
        "2",
        "--study-name",
        "broken",
        "--set",
        "model.architecture=bogus",
        "--output",
        "broken.yaml",
        "--plots",
        "plots",
        check=False,
    )
    assert proc.returncode == 1 and "no completed trial" in proc.stderr
    study = optuna.load_study(study_name="broken", storage=f"sqlite:///{tuned_project}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert not (tuned_project / "broken.yaml").exists()
