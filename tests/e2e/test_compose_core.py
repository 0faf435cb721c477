"""The `core` profile for real: SeaweedFS (S3) and MLflow, its artifacts in S3, DVC's s3 remote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.e2e.support import Stack, build_image, wait_for_http
from tests.helpers import REPO

MLFLOW_BUCKET, DVC_BUCKET = "kws-mlflow", "kws-dvc"  # the defaults of .env.example


@pytest.fixture(scope="module")
def core(stack: Stack) -> Iterator[Stack]:
    """Images built, `docker compose --profile core up --wait` done."""
    build_image("s3")
    build_image("mlflow")
    start = time.monotonic()
    stack.compose("--profile", "core", "up", "--detach", "--wait", timeout=600)
    print(f"core up and healthy in {time.monotonic() - start:.1f} s")
    yield stack


def s3_client(stack: Stack, secret: str | None = None) -> object:
    return boto3.client(
        "s3",
        endpoint_url=stack.url("S3_PORT"),
        aws_access_key_id=stack.settings["S3_ACCESS_KEY"],
        aws_secret_access_key=secret or stack.settings["S3_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def keys(stack: Stack, bucket: str) -> list[str]:
    listing = s3_client(stack).list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return [item["Key"] for item in listing.get("Contents", [])]


def log_run_with_artifact(stack: Stack, workdir: Path) -> tuple[str, str]:
    """A run with one artifact, logged from this host through the MLflow service."""
    from mlflow.tracking import MlflowClient

    from kws.tracking import artifacts_through_the_server

    artifacts_through_the_server()
    client = MlflowClient(tracking_uri=stack.url("MLFLOW_PORT"))
    experiment = client.create_experiment(f"e2e-{time.time_ns()}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "accuracy", 0.5)
    note = workdir / "note.txt"
    note.write_text(f"stored in S3 by run {run.info.run_id}\n")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)
    return run.info.run_id, note.read_text()


def download(stack: Stack, run_id: str, target: Path) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=stack.url("MLFLOW_PORT"))
    return Path(client.download_artifacts(run_id, "note.txt", str(target))).read_text()


def test_both_services_are_healthy_and_mlflow_answers(core: Stack) -> None:
    wait_for_http(core.url("MLFLOW_PORT") + "/health", timeout=5)
    states = core.compose("ps", "--format", "{{.Service}} {{.Health}}").split("\n")
    assert sorted(filter(None, states)) == ["mlflow healthy", "s3 healthy"]


def test_mlflow_keeps_run_artifacts_in_the_s3_store(core: Stack, tmp_path: Path) -> None:
    run_id, text = log_run_with_artifact(core, tmp_path)
    assert any(key.endswith(f"{run_id}/artifacts/note.txt") for key in keys(core, MLFLOW_BUCKET))
    assert download(core, run_id, tmp_path / "back") == text


def test_runs_and_artifacts_survive_a_restart_of_mlflow(core: Stack, tmp_path: Path) -> None:
    run_id, text = log_run_with_artifact(core, tmp_path)
    core.compose("restart", "mlflow", timeout=300)
    core.compose("up", "--detach", "--wait", "mlflow", timeout=300)
    assert download(core, run_id, tmp_path / "back") == text


def test_the_store_lets_in_no_wrong_or_anonymous_client(core: Stack) -> None:
    with pytest.raises(ClientError, match="SignatureDoesNotMatch|AccessDenied|Forbidden"):
        s3_client(core, secret="not-the-secret").list_buckets()  # type: ignore[attr-defined]
    anonymous = boto3.client(
        "s3",
        endpoint_url=core.url("S3_PORT"),
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )
    with pytest.raises(ClientError):
        anonymous.list_objects_v2(Bucket=MLFLOW_BUCKET)


def dvc(repo: Path, *args: str, env: dict[str, str]) -> str:
    dvc_bin = Path(sys.executable).with_name("dvc")
    proc = subprocess.run(
        [str(dvc_bin), *args], cwd=repo, capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_dvc_pushes_to_and_pulls_from_the_projects_s3_remote(core: Stack, tmp_path: Path) -> None:
    repo = tmp_path / "clone"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": core.settings["S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": core.settings["S3_SECRET_KEY"],
    }
    dvc(repo, "init", "-q", env=env)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the project's remotes
    dvc(repo, "remote", "modify", "--local", "s3", "endpointurl", core.url("S3_PORT"), env=env)
    data = repo / "data"
    data.mkdir()
    payload = {"a.bin": bytes(range(256)) * 4096, "b.txt": b"digits\n"}
    for name, content in payload.items():
        (data / name).write_bytes(content)
    dvc(repo, "add", "-q", "data", env=env)
    dvc(repo, "push", "-r", "s3", env=env)
    assert sum(key.startswith("store/files/md5/") for key in keys(core, DVC_BUCKET)) >= 3

    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc(repo, "pull", "-r", "s3", env=env)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == payload


def test_down_leaves_no_container_network_or_volume(core: Stack) -> None:
    assert core.leftovers()["volumes"], "the stack should have had named volumes"
    core.compose("--profile", "*", "down", "--volumes", "--remove-orphans", timeout=300)
    assert core.leftovers() == {"containers": [], "networks": [], "volumes": []}
