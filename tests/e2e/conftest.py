"""Real Docker: build the images, run containers and the Compose stack, tear everything down.

Images are built from this checkout on $BASE_IMAGE (default python:3.11-slim; hosts that
cannot pull build on kws-base:bookworm) with tag $IMAGE_TAG (default dev), so a preceding
`make images` is reused from the build cache.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

BASE_IMAGE = os.environ.get("BASE_IMAGE", "python:3.11-slim")
IMAGE_TAG = os.environ.get("IMAGE_TAG", "dev")
PROJECT = "kws-e2e"  # never the user's own `kws` stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


def run(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or an AssertionError with its output."""
    proc = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


@pytest.fixture(scope="session", autouse=True)
def docker() -> None:
    """A running Docker engine with the Compose plugin (e2e tests need nothing less)."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: e2e tests need a Docker engine and Compose")
    run("docker", "info", timeout=30)
    run("docker", "compose", "version", timeout=30)


def build_image(name: str) -> str:
    """Build docker/NAME/Dockerfile as kws-NAME:$IMAGE_TAG; the tag."""
    tag = f"kws-{name}:{IMAGE_TAG}"
    run(
        "docker", "build", "--quiet",
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg", f"GIT_COMMIT={git_commit()}",
        "-t", tag, "-f", f"docker/{name}/Dockerfile", ".",
        timeout=1800,
    )  # fmt: skip
    return tag


def git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float, interval: float = 0.05) -> float:
    """Seconds until url answers 200 (AssertionError after timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(interval)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


@dataclass(frozen=True)
class Stack:
    """A Compose project of this repository's docker-compose.yml, with its own settings."""

    env_file: Path
    settings: dict[str, str]

    def compose(self, *args: str, timeout: float = 900) -> str:
        """`docker compose` on this project."""
        return run(
            "docker", "compose", "--project-name", PROJECT, "--env-file", str(self.env_file),
            *args, timeout=timeout,
        )  # fmt: skip

    def url(self, port_setting: str) -> str:
        return f"http://127.0.0.1:{self.settings[port_setting]}"

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project still on the engine."""
        label = f"label=com.docker.compose.project={PROJECT}"
        return {
            kind: run("docker", *command, "--filter", label, "--format", "{{.Name}}").split()
            for kind, command in {
                "containers": ("ps", "-a"),
                "networks": ("network", "ls"),
                "volumes": ("volume", "ls"),
            }.items()
        }


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Settings for the e2e project: fresh credentials, free ports; torn down at the end."""
    settings = {
        "BASE_IMAGE": BASE_IMAGE,
        "IMAGE_TAG": IMAGE_TAG,
        "GIT_COMMIT": git_commit(),
        "BIND_ADDRESS": "127.0.0.1",
        "S3_ACCESS_KEY": f"kws-{secrets.token_hex(4)}",
        "S3_SECRET_KEY": secrets.token_hex(20),
        **{name: str(free_port()) for name in ("S3_PORT", "MLFLOW_PORT", "GATEWAY_PORT")},
        "PROMETHEUS_PORT": str(free_port()),
    }
    env_file = tmp_path_factory.mktemp("compose") / "e2e.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env_file.chmod(0o600)
    project = Stack(env_file, settings)
    yield project
    project.compose("--profile", "*", "down", "--volumes", "--remove-orphans", timeout=300)


def image_config(tag: str) -> dict:
    """`docker image inspect` of one image."""
    return json.loads(run("docker", "image", "inspect", tag))[0]
