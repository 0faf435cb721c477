"""The predictor image: serving dependencies only, a size budget, ready in 5 s, set by env."""

from __future__ import annotations

import json
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.support import BASE_IMAGE, build_image, free_port, image_config, run, wait_for_http
from tests.helpers import tone, wav_bytes

TRAINING_ONLY = ("librosa", "scipy", "tensorflow", "keras", "numba", "sklearn", "torch")
# What the image may add to its base: python:3.11-slim (~130 MB) + 370 MB = 500 MB
ADDED_MB_BUDGET = 370
COLD_START_BUDGET_S = 5.0
ADMIN_TOKEN = secrets.token_hex(8)


@dataclass(frozen=True)
class Running:
    """A predictor container and what its start cost."""

    container: str
    url: str
    cold_start_s: float


@pytest.fixture(scope="module")
def image() -> str:
    return build_image("predictor")


@pytest.fixture(scope="module")
def package(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny trained package, readable by the image's unprivileged user."""
    target = tmp_path_factory.mktemp("mounted") / "package"
    shutil.copytree(tiny_project / "models" / "package", target)
    for path in [target, *target.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture(scope="module")
def predictor(image: str, package: Path) -> Iterator[Running]:
    """`docker run` with the package on local disk, timed until the first ready answer."""
    port = free_port()
    start = time.monotonic()
    container = run(
        "docker", "run", "--detach", "--rm", "--publish", f"127.0.0.1:{port}:8080",
        "--volume", f"{package}:/models/package:ro",
        "--env", f"KWS_ADMIN_TOKEN={ADMIN_TOKEN}", "--env", "KWS_MAX_SECONDS=2",
        image,
    ).strip()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/v2/health/ready", timeout=60)
        cold_start = time.monotonic() - start
        print(f"predictor ready {cold_start:.2f} s after docker run")
        yield Running(container, url, cold_start)
    finally:
        run("docker", "rm", "--force", container)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_image_holds_no_training_library(image: str) -> None:
    probe = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {TRAINING_ONLY!r} if importlib.util.find_spec(m)]))"
    )
    assert (
        json.loads(run("docker", "run", "--rm", "--entrypoint", "python", image, "-c", probe)) == []
    )


def test_the_image_adds_at_most_its_budget_to_the_base(image: str) -> None:
    size, base = image_config(image)["Size"], image_config(BASE_IMAGE)["Size"]
    print(f"{image}: {size / 1e6:.0f} MB ({BASE_IMAGE}: {base / 1e6:.0f} MB)")
    assert (size - base) / 1e6 <= ADDED_MB_BUDGET


def test_it_runs_as_an_unprivileged_user(image: str, predictor: Running) -> None:
    assert image_config(image)["Config"]["User"] == "10001:10001"
    assert run("docker", "exec", predictor.container, "id", "-u").strip() == "10001"


def test_it_is_ready_within_5_s_of_docker_run_with_a_model_on_local_disk(
    predictor: Running,
) -> None:
    assert predictor.cold_start_s <= COLD_START_BUDGET_S


def test_it_classifies_a_real_recording(predictor: Running, package: Path, fsdd_dir: Path) -> None:
    wav = next((fsdd_dir / "recordings").glob("*.wav")).read_bytes()
    status, answer = post(predictor.url + "/predict", wav, {"Content-Type": "audio/wav"})
    assert status == 200
    assert answer["label"] in json.loads((package / "labels.json").read_text())
    assert answer["model"]["version"] == "local"


def test_limits_and_the_admin_token_come_from_the_environment(predictor: Running) -> None:
    too_long = wav_bytes(tone(3.0))
    status, answer = post(predictor.url + "/predict", too_long, {"Content-Type": "audio/wav"})
    assert status == 422 and "limit is 2 s" in answer["error"]
    reload = predictor.url + "/admin/reload"
    wrong = {"Authorization": "Bearer not-the-token", "Content-Type": "application/json"}
    assert post(reload, b"{}", wrong)[0] == 401
    right = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    assert post(reload, b"{}", right)[0] == 200


def test_docker_reports_it_healthy(predictor: Running) -> None:
    deadline = time.monotonic() + 30
    status = ""
    while time.monotonic() < deadline:
        status = run(
            "docker", "inspect", "--format", "{{.State.Health.Status}}", predictor.container
        )
        if status.strip() == "healthy":
            return
        time.sleep(1)
    raise AssertionError(f"health status {status.strip()!r} after 30 s")
