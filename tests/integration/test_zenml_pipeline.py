"""The ZenML training pipeline on the local orchestrator, through the real CLI.

A temporary ZenML store (ZENML_CONFIG_PATH, analytics off) with the `local` stack of
`kws pipeline stack` (MLflow tracker + registry on the project's SQLite store); the smoke
config, then a run whose export step fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY, hermetic_environment, run_kws
from tests.helpers import REPO, write_params

pytestmark = pytest.mark.slow

ZENML = str(Path(sys.executable).with_name("zenml"))
# Read back a run as ZenML stored it (in a subprocess: importing ZenML reconfigures logging)
INSPECT_RUN = """
import json, sys
from pathlib import Path
from zenml.client import Client
from zenml.utils import source_utils

source_utils.set_custom_source_root(sys.argv[2])
run = Client().get_pipeline_run(sys.argv[1])
steps = {}
for name, step in run.steps.items():
    outputs = {key: [a.uri for a in versions] for key, versions in step.outputs.items()}
    steps[name] = {"status": step.status.value, "outputs": outputs}
package = None
if "register" in run.steps:
    package = run.steps["register"].inputs["model_package"][0].load()
print(json.dumps({
    "status": run.status.value,
    "metadata": {k: str(v) for k, v in run.run_metadata.items()},
    "steps": steps,
    "package_files": sorted(p.name for p in Path(package).iterdir()) if package else [],
}))
"""


def zenml_env(project: Path) -> dict[str, str]:
    return {
        "ZENML_CONFIG_PATH": str(project / "zenml-config"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_LOGGING_COLORS_DISABLED": "true",
    }


def zenml_runs(project: Path) -> list[dict[str, Any]]:
    """`zenml pipeline runs list` of the temporary store, newest first."""
    proc = subprocess.run(
        [ZENML, "pipeline", "runs", "list", "--output", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**hermetic_environment(), **zenml_env(project)},
        check=True,
    )
    return list(json.loads(proc.stdout)["items"])


def inspect_run(project: Path, run_id: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", INSPECT_RUN, run_id, str(REPO)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**hermetic_environment(), **zenml_env(project)},
        check=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, fsdd_dir: Path) -> Path:
    """A project folder with a temporary ZenML store holding the active `local` stack."""
    project = tmp_path_factory.mktemp("zenml-project")
    write_params(project, data={**TINY, "fsdd_source": str(fsdd_dir)})
    stack = run_kws(project, "pipeline", "stack", env=zenml_env(project))
    assert f"MLflow tracking and registry: sqlite:///{project / 'mlflow.db'}" in stack.stdout
    return project


def run_smoke(project: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`kws pipeline run --config smoke` on the tiny subset (extra: more CLI arguments)."""
    return run_kws(
        project,
        "pipeline",
        "run",
        "--config",
        "smoke",
        "--set",
        f"data.max_per_class={TINY['max_per_class']}",
        *extra,
        check=check,
        env=zenml_env(project),
    )


@pytest.fixture(scope="module")
def smoke(project: Path) -> subprocess.CompletedProcess[str]:
    return run_smoke(project)


@pytest.fixture()
def mlflow_client(project: Path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)  # not another test's global URI


def test_the_local_stack_is_idempotent(project: Path) -> None:
    again = run_kws(project, "pipeline", "stack", env=zenml_env(project))
    assert "stack 'local' updated and active" in again.stdout


def test_smoke_run_succeeds_and_links_zenml_and_mlflow(
    project: Path, smoke: subprocess.CompletedProcess[str], mlflow_client
) -> None:
    latest = zenml_runs(project)[0]
    assert latest["status"] == "completed" and latest["stack"] == "local"
    assert latest["pipeline"] == "kws_training" and latest["run_name"].startswith("kws-smoke-")
    assert f"({latest['id']}): completed" in smoke.stdout

    run = inspect_run(project, latest["id"])
    assert {name: step["status"] for name, step in run["steps"].items()} == dict.fromkeys(
        ["load_data", "featurize", "train_model", "evaluate", "export", "register"], "completed"
    )
    for step in run["steps"].values():  # every output artefact is in the artifact store
        for uris in step["outputs"].values():
            assert uris and all(Path(uri).exists() for uri in uris)
    assert {"model.tflite", "labels.json", "metadata.json"} <= set(run["package_files"])
    for path in ("data/prepared/manifest.csv", "models/train/model.keras", "reports/metrics.json"):
        assert (project / path).is_file()

    # the MLflow run carries the ZenML run id; the ZenML run names the MLflow run and version
    metadata = run["metadata"]
    mlflow_run = mlflow_client.get_run(metadata["mlflow_run_id"])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.info.run_name == latest["run_name"]
    assert mlflow_run.data.tags["pipeline_run_id"] == latest["id"]
    assert mlflow_run.data.params["train.epochs"] == "1"
    assert "test_accuracy" in mlflow_run.data.metrics
    version = mlflow_client.get_model_version(metadata["model_name"], metadata["model_version"])
    assert version.run_id == mlflow_run.info.run_id
    assert version.tags["pipeline_run_id"] == latest["id"]
    assert mlflow_client.get_model_version_by_alias("kws", "challenger").version == version.version
    assert f"registered kws version {version.version}" in smoke.stdout


def test_a_failing_step_fails_both_runs_and_registers_nothing(
    project: Path, smoke: subprocess.CompletedProcess[str], mlflow_client
) -> None:
    before = {v.version for v in mlflow_client.search_model_versions("name='kws'")}
    proc = run_smoke(
        project,
        "--set",
        "paths.package=params.yaml/package",  # export cannot write its package
        check=False,
    )
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: pipeline run kws-smoke-") and "failed at step export" in error

    latest = zenml_runs(project)[0]
    assert latest["status"] == "failed"
    steps = inspect_run(project, latest["id"])["steps"]
    assert steps["train_model"]["status"] == "completed" and steps["export"]["status"] == "failed"
    assert steps.get("register", {}).get("status") in (None, "skipped")

    (failed,) = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("kws").experiment_id],
        filter_string=f"tags.pipeline_run_id = '{latest['id']}'",
    )
    assert failed.info.status == "FAILED"
    assert {v.version for v in mlflow_client.search_model_versions("name='kws'")} == before


def test_unknown_config_is_one_error_line(project: Path) -> None:
    proc = run_kws(
        project, "pipeline", "run", "--config", "nope", check=False, env=zenml_env(project)
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: unknown pipeline config 'nope' (baseline, smoke, variant or a YAML file)"
    )


def test_the_kind_stack_definition_registers_in_zenml(project: Path) -> None:
    """ZenML validates each kind component (flavor, configuration keys) when registering it."""
    env = zenml_env(project)
    variables = [
        "NODE_IP=172.18.0.2",
        "MINIO_ACCESS_KEY=kws-test",
        "MINIO_SECRET_KEY=not-secret",
        "MLFLOW_USERNAME=kws",
        "MLFLOW_PASSWORD=not-secret",
    ]
    args = ["pipeline", "stack", "kind", "--no-activate"]
    for variable in variables:
        args += ["--var", variable]
    created = run_kws(project, *args, env=env)
    assert (
        "stack 'kind' created: orchestrator kind-kubernetes, artifact_store kind-minio, "
        "container_registry kind-registry, image_builder local-docker, "
        "experiment_tracker kind-mlflow, model_registry kind-mlflow\n"
        "MLflow tracking and registry: http://172.18.0.2:30500"
    ) in created.stdout

    missing = run_kws(project, "pipeline", "stack", "kind", check=False, env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == (
        "error: stack.yaml needs MINIO_ACCESS_KEY, MINIO_SECRET_KEY, MLFLOW_USERNAME, "
        "MLFLOW_PASSWORD, NODE_IP (--var NAME=VALUE)"
    )
