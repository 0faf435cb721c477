"""MLflow against a real `mlflow server`: runs, artefacts, registry, aliases, gate, serving."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from kws.inference import Predictor
from kws.params import load_params
from tests.conftest import TINY, run_kws
from tests.helpers import REPO, write_params

pytestmark = pytest.mark.slow
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds}s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server: SQLite backend, proxied artifact store."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    process = subprocess.Popen(
        [
            MLFLOW,
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(root / "server.log").open("w"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", process)
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, fsdd_dir: Path, mlflow_server: str) -> Path:
    """Two trainings tracked on the server: versions 1 and 2 of model `kws`."""
    project = tmp_path_factory.mktemp("tracked")
    write_params(
        project, data={**TINY, "fsdd_source": str(fsdd_dir)}, train={"epochs": 2, "batch_size": 16}
    )
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    for command in (["data", "fetch"], ["data", "prepare"], ["featurize"]):
        run_kws(project, *command, env=env)
    for epochs in ("2", "3"):
        for command in (["train", "--set", f"train.epochs={epochs}"], ["evaluate"], ["export"]):
            run_kws(project, *command, env=env)
    return project


@pytest.fixture()
def client(mlflow_server: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    return MlflowClient(mlflow_server)


def run_of(project: Path) -> str:
    return json.loads((project / "models/train/mlflow_run.json").read_text())["run_id"]


def test_a_training_run_records_params_metrics_artifacts_and_tags(project: Path, client) -> None:
    run = client.get_run(run_of(project))
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "3"
    assert (
        run.data.params["model.architecture"]
        == load_params(project / "params.yaml").model.architecture
    )
    assert run.data.params["features.n_mels"] == str(
        load_params(project / "params.yaml").features.n_mels
    )
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    for metric in (
        "test_accuracy",
        "test_macro_f1",
        "test_zero_precision",
        "test_nine_recall",
        "train_seconds",
    ):
        assert metric in run.data.metrics
    info = json.loads((project / "data/prepared/data_info.json").read_text())
    tags = run.data.tags
    assert tags["data_hash"] == info["data_hash"]
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert tags["git_dirty"] in ("true", "false") and len(tags["params_hash"]) == 12
    files = {
        a.path
        for folder in ("package", "reports", "model")
        for a in client.list_artifacts(run.info.run_id, folder)
    }
    for expected in (
        "package/model.tflite",
        "package/features.json",
        "package/labels.json",
        "reports/confusion_matrix.png",
        "reports/training_curves.png",
        "model/MLmodel",
    ):
        assert expected in files


def test_registered_versions_download_and_predict(
    project: Path, client, fsdd_dir: Path, tmp_path: Path
) -> None:
    from kws.registry import Registry

    registry = Registry("kws")
    versions = [v.version for v in registry.versions()]
    assert versions == ["2", "1"]
    tags = registry.show("2").tags
    assert {"accuracy", "macro_f1", "data_hash", "git_commit"} <= set(tags)
    package = registry.download_package("2", tmp_path)
    prediction = Predictor.from_path(package).predict(fsdd_dir / "recordings/4_lucas_2.wav")
    assert prediction.label in json.loads((package / "labels.json").read_text())
    assert registry.alias_version("challenger") == "2"
    assert registry.alias_version("champion") == "1"


def test_promote_and_rollback_move_the_champion(project: Path, mlflow_server: str) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    assert "champion: v2 (was v1)" in run_kws(project, "registry", "promote", "2", env=env).stdout
    listing = run_kws(project, "registry", "list", env=env).stdout
    assert any(line.startswith("2 ") and "champion" in line for line in listing.splitlines())
    assert "champion: v1 (was v2)" in run_kws(project, "registry", "rollback", env=env).stdout
    again = run_kws(project, "registry", "rollback", check=False, env=env)
    assert again.returncode == 1 and "no previous champion" in again.stderr
    shown = json.loads(run_kws(project, "registry", "show", "2", env=env).stdout)
    assert [h["action"] for h in shown["champion_history"]] == [
        "first version",
        "promote",
        "rollback",
    ]
    missing = run_kws(project, "registry", "promote", "99", check=False, env=env)
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")


def test_gate_promotes_only_a_challenger_better_by_the_margin(
    project: Path, mlflow_server: str, client
) -> None:
    from kws.registry import Registry

    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    Registry("kws").client.set_registered_model_alias("kws", "challenger", "2")
    # no accuracy gain can reach a margin of 1.0: the champion stays
    kept = run_kws(project, "registry", "gate", "--set", "registry.gate_margin=1.0", env=env)
    assert kept.stdout.startswith("kept champion") and "margin 1.0000" in kept.stdout
    assert Registry("kws").alias_version("champion") == "1"
    # any challenger clears a margin of -1.0: it is promoted
    won = run_kws(project, "registry", "gate", "--set", "registry.gate_margin=-1.0", env=env)
    assert won.stdout.startswith("promoted: challenger v2")
    assert Registry("kws").alias_version("champion") == "2"
    run_kws(project, "registry", "rollback", env=env)


def test_pyfunc_loads_and_predicts_from_bytes_and_waveforms(
    project: Path, client, fsdd_dir: Path
) -> None:
    import mlflow.pyfunc
    import soundfile as sf

    model = mlflow.pyfunc.load_model("models:/kws@champion")
    wav = fsdd_dir / "recordings/3_george_5.wav"
    wave, rate = sf.read(wav, dtype="float32")
    out = model.predict(
        pd.DataFrame(
            {
                "audio": [wav.read_bytes(), None],
                "waveform": [None, wave.tolist()],
                "sample_rate": [None, rate],
            }
        )
    )
    assert list(out.columns) == ["label", "confidence", "probabilities"]
    assert out.loc[0, "label"] == out.loc[1, "label"]
    probabilities = json.loads(out.loc[0, "probabilities"])
    assert len(probabilities) == 10 and abs(sum(probabilities.values()) - 1) < 1e-3


def test_mlflow_models_serve_answers_a_request(
    project: Path, mlflow_server: str, fsdd_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            MLFLOW,
            "models",
            "serve",
            "-m",
            "models:/kws/1",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        # the scoring server execs `uvicorn`: the venv's bin must be on PATH, as when activated
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow_server,
            "PATH": f"{Path(MLFLOW).parent}{os.pathsep}{os.environ['PATH']}",
        },
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "serve.log").open("w"),
        start_new_session=True,
    )
    try:
        try:
            wait_for(f"http://127.0.0.1:{port}/ping", process, seconds=120)
        except RuntimeError:
            pytest.fail(
                "mlflow models serve died:\n" + (tmp_path / "serve.log").read_text()[-3000:]
            )
        audio = base64.b64encode((fsdd_dir / "recordings/8_nicolas_1.wav").read_bytes()).decode()
        body = json.dumps({"dataframe_split": {"columns": ["audio"], "data": [[audio]]}})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = json.loads(response.read())["predictions"]
        assert predictions[0]["label"] in json.loads(
            (project / "models/package/labels.json").read_text()
        )
    finally:
        stop(process)


def test_a_crashing_training_is_marked_failed(project: Path, mlflow_server: str, client) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    proc = run_kws(
        project, "train", "--set", "model.architecture=transformer", check=False, env=env
    )
    assert proc.returncode == 1 and "unknown model.architecture" in proc.stderr
    experiment = client.get_experiment_by_name("kws")
    failed = client.search_runs([experiment.experiment_id], "attributes.status = 'FAILED'")
    assert failed and failed[0].data.params["model.architecture"] == "transformer"
    running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    assert not running


def test_an_unreachable_tracking_server_fails_fast_with_one_line(project: Path) -> None:
    start = time.monotonic()
    proc = run_kws(
        project,
        "train",
        check=False,
        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
    )
    assert time.monotonic() - start < 60
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "unreachable" in lines[0]
    assert "Traceback" not in proc.stderr


def test_without_a_server_runs_go_to_a_local_sqlite_store(tiny_project: Path) -> None:
    assert (tiny_project / "mlflow.db").is_file()
    assert any((tiny_project / "mlartifacts").rglob("model.tflite"))


def test_experiments_run_compares_v1_the_default_and_its_variations_in_one_experiment(
    tiny_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlays = tiny_project / "pipelines/configs/params"
    overlays.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "pipelines/configs/params/baseline.yaml", overlays)
    out = run_kws(
        tiny_project,
        "experiments",
        "run",
        *("--variation", "v1_baseline", "--variation", "v2_default", "--variation", "float32"),
        *("--set", "train.epochs=1", "--set", "export.quantization=dynamic_int8"),
        *("--output", "reports/experiments.md"),
    )
    table = (tiny_project / "reports/experiments.md").read_text()
    assert table == out.stdout.rstrip("\n") + "\n"
    assert "test accuracy (TFLite)" in table
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert "model.architecture=cnn" in rows["v1_baseline"]
    assert "train.epochs" not in rows["v1_baseline"]  # --set wins over the v1 overlay
    assert "| v2_default | — |" in rows["v2_default"]
    assert "export.quantization=none" in rows["float32"] and "weights of v2_default" in table
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tiny_project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("kws-experiments")
    runs = {
        r.data.tags["mlflow.runName"]: r for r in client.search_runs([experiment.experiment_id])
    }
    assert set(runs) == {"v1_baseline", "v2_default", "float32"}
    assert all("tflite_test_accuracy" in r.data.metrics for r in runs.values())
    assert runs["v1_baseline"].data.params["model.architecture"] == "cnn"
    assert runs["float32"].data.tags["weights_from"] == "v2_default"
    float32, int8 = runs["float32"].data.metrics, runs["v2_default"].data.metrics
    assert float32["tflite_bytes"] > 2 * int8["tflite_bytes"]  # int8 weights: a quarter
    assert float32["test_accuracy"] == int8["test_accuracy"]  # one Keras model, two exports
    compare = run_kws(tiny_project, "report", "compare", "--output", "reports/comparison.md")
    assert "| float32 | export.quantization=none |" in compare.stdout
    assert str(tiny_project) not in (tiny_project / "reports/comparison.md").read_text()


def test_a_package_logged_from_any_folder_downloads_as_the_package(
    project: Path, client, fsdd_dir: Path, tmp_path: Path
) -> None:
    """A pipeline step hands over its package in a temporary folder (zenml-xxxx)."""
    import shutil

    import mlflow

    from kws.registry import Registry, log_pyfunc

    staged = shutil.copytree(project / "models/package", tmp_path / "zenml-x48z9vot")
    wav = (fsdd_dir / "recordings/4_lucas_2.wav").read_bytes()
    mlflow.register_model(log_pyfunc(run_of(project), staged, wav), "kws-any-folder")
    package = Registry("kws-any-folder").download_package("1", tmp_path / "download")
    assert (package / "model.tflite").read_bytes() == (staged / "model.tflite").read_bytes()
