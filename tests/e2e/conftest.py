"""Real Docker: build the images, run containers and the Compose stack, tear everything down.

Images are built from this checkout on $BASE_IMAGE (default python:3.11-slim; hosts that
cannot pull build on kws-base:bookworm) with tag $IMAGE_TAG (default dev), so a preceding
`make images` is reused from the build cache.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.support import BASE_IMAGE, IMAGE_TAG, Stack, free_port, git_commit, run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is an e2e test."""
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def docker() -> None:
    """A running Docker engine with the Compose plugin (e2e tests need nothing less)."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: e2e tests need a Docker engine and Compose")
    run("docker", "info", timeout=30)
    run("docker", "compose", "version", timeout=30)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Settings for the e2e Compose project: fresh credentials, free ports; torn down after."""
    settings = {
        "BASE_IMAGE": BASE_IMAGE,
        "IMAGE_TAG": IMAGE_TAG,
        "GIT_COMMIT": git_commit(),
        "BIND_ADDRESS": "127.0.0.1",
        "S3_ACCESS_KEY": f"kws-{secrets.token_hex(4)}",
        "S3_SECRET_KEY": secrets.token_hex(20),
        **{
            name: str(free_port())
            for name in ("S3_PORT", "MLFLOW_PORT", "GATEWAY_PORT", "PROMETHEUS_PORT")
        },
    }
    env_file = tmp_path_factory.mktemp("compose") / "e2e.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env_file.chmod(0o600)
    project = Stack(env_file, settings)
    yield project
    project.compose("--profile", "*", "down", "--volumes", "--remove-orphans", timeout=300)
