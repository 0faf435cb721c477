"""MLflow tracking: where runs go, what every training records, and failing fast.

No MLFLOW_TRACKING_URI: a local SQLite store (mlflow.db) and artifacts in
mlartifacts/, both in the project folder and git-ignored. With
MLFLOW_TRACKING_URI=http://host:port: that server, checked before any work starts.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kws.errors import KwsError
from kws.params import Params
from kws.provenance import git_commit, git_dirty

log = logging.getLogger(__name__)
LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
RUN_FILE = "mlflow_run.json"
PIPELINE_RUN_ENV = "KWS_PIPELINE_RUN_ID"


class TrackingError(KwsError):
    """The tracking server cannot be used."""


def tracking_uri() -> str:
    """The tracking URI in force: the environment's, or the local SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / LOCAL_DB}"


def artifacts_through_the_server() -> None:
    """Move artifacts through the tracking server, never by presigned object-store URLs.

    A server proxying an S3 store (--serve-artifacts) offers presigned URLs for large
    transfers; they name the store as the server reaches it (http://s3:8333 in Compose),
    which a client outside that network cannot resolve: the download hangs in retries.
    """
    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "false")


def configure() -> str:
    """Point MLflow at the tracking store; an unreachable server is one clear error."""
    import mlflow

    # MLflow retries an unreachable server for minutes by default: fail fast instead
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    artifacts_through_the_server()
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return uri


def check_server(uri: str, timeout: float = 3.0) -> None:
    """Raise TrackingError unless the server answers its health check."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow server {uri} answered {response.status}")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason})") from exc


def experiment_id(name: str) -> str:
    """Id of the named experiment, created on first use (local artifacts stay in the project)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if tracking_uri().startswith("sqlite:"):
        location = (Path.cwd() / LOCAL_ARTIFACTS).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def run_tags(params: Params, data_hash: str) -> dict[str, str]:
    """Traceability tags: code, data, parameters, pipeline run."""
    tags = {
        "git_commit": git_commit(),
        "mlflow.source.git.commit": git_commit(),
        "git_dirty": str(git_dirty()).lower(),
        "data_hash": data_hash,
        "params_hash": params.digest(),
        "architecture": params.model.architecture,
    }
    if os.environ.get(PIPELINE_RUN_ENV):
        tags["pipeline_run_id"] = os.environ[PIPELINE_RUN_ENV]
    return tags


class TrainingRun:
    """An MLflow run being written by a training."""

    def __init__(self, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.client = MlflowClient()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (non-numbers are skipped)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or folder."""
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def epoch_callback(self) -> Any:
        """A Keras callback logging every epoch's metrics."""
        import keras

        run = self

        class EpochMetrics(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                run.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)

        return EpochMetrics()


@contextmanager
def training_run(
    params: Params,
    data_hash: str,
    experiment: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[TrainingRun]:
    """Start a run with params and tags; mark it FAILED if the body raises, else FINISHED.

    With parent_run_id the run is nested under that run (MLflow's parentRunId tag).
    When an MLflow run is already active (a pipeline step's experiment tracker started
    it), that run is used instead of a new one and its owner ends it.
    """
    import mlflow
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    configure()
    client = MlflowClient()
    all_tags = {**run_tags(params, data_hash), **(tags or {})}
    active = mlflow.active_run() if parent_run_id is None else None
    if active is not None:
        run_id = active.info.run_id
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in all_tags.items()])
    else:
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id(experiment), run_name=run_name, tags=all_tags)
        run_id = run.info.run_id
    log.info("MLflow run %s (%s)", run_id, tracking_uri())
    try:
        flat = {
            k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in params.flat().items()
        }
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
        yield TrainingRun(run_id)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    if active is None:
        client.set_terminated(run_id, "FINISHED")


def save_run_id(run_id: str, folder: Path) -> None:
    """Remember which MLflow run produced the artefacts in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(
        json.dumps({"run_id": run_id, "tracking_uri": tracking_uri()}) + "\n"
    )


def load_run(folder: Path) -> TrainingRun | None:
    """The run recorded in folder, if any (tracking configured)."""
    file = folder / RUN_FILE
    if not file.is_file():
        return None
    configure()
    return TrainingRun(json.loads(file.read_text())["run_id"])


def mark_failed(folder: Path, pipeline_run_id: str) -> str | None:
    """Mark the run recorded in folder FAILED if pipeline_run_id produced it; return its id.

    A run left by an earlier pipeline run (another pipeline_run_id tag) is not touched.
    """
    from mlflow.tracking import MlflowClient

    run = load_run(folder)
    if run is None:
        return None
    client = MlflowClient()
    if client.get_run(run.run_id).data.tags.get("pipeline_run_id") != pipeline_run_id:
        return None
    client.set_terminated(run.run_id, "FAILED")
    return run.run_id
