"""Docker helpers of the e2e tests: commands, image builds, ports, HTTP waits, a Compose project."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import REPO

BASE_IMAGE = os.environ.get("BASE_IMAGE", "python:3.11-slim")
IMAGE_TAG = os.environ.get("IMAGE_TAG", "dev")
PROJECT = "kws-e2e"  # never the user's own `kws` stack


def run(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or an AssertionError with its output."""
    proc = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def git_commit() -> str:
    """HEAD of this checkout (the images' revision label)."""
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def build_image(name: str) -> str:
    """Build docker/NAME/Dockerfile as kws-NAME:$IMAGE_TAG with `make images`, the target CI's
    build job runs too; the tag."""
    run(
        "make", "images", f"IMAGES={name}", f"IMAGE_TAG={IMAGE_TAG}", f"BASE_IMAGE={BASE_IMAGE}",
        timeout=1800,
    )  # fmt: skip
    return f"kws-{name}:{IMAGE_TAG}"


def image_config(tag: str) -> dict[str, Any]:
    """`docker image inspect` of one image."""
    return dict(json.loads(run("docker", "image", "inspect", tag))[0])


def free_port() -> int:
    """A TCP port nothing listens on now (127.0.0.1)."""
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
        """http://127.0.0.1:<the published port named by a setting>."""
        return f"http://127.0.0.1:{self.settings[port_setting]}"

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project still on the engine."""
        label = f"label=com.docker.compose.project={PROJECT}"
        commands = {
            "containers": ("ps", "--all", "--format", "{{.Names}}"),
            "networks": ("network", "ls", "--format", "{{.Name}}"),
            "volumes": ("volume", "ls", "--format", "{{.Name}}"),
        }
        return {
            kind: run("docker", *command, "--filter", label).split()
            for kind, command in commands.items()
        }
