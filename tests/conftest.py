"""Shared fixtures: the FSDD mirror and one tiny trained model package per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import local_fsdd, write_params

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY = {"max_per_class": 4, "synthetic_voices": 0}  # synthesis has its own tests


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    """The local FSDD copy ($KWS_FSDD_SOURCE) that tests and CI use instead of a download."""
    try:
        return local_fsdd()
    except LookupError as exc:
        reason = str(exc)
    pytest.fail(reason)


def run_kws(
    project: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run the real `kws` console script in a project folder (env: extra variables)."""
    kws = Path(sys.executable).with_name("kws")
    proc = subprocess.run(
        [str(kws), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**hermetic_environment(), **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kws {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


STAGES = (
    ("data", "fetch"),
    ("data", "prepare"),
    ("featurize",),
    ("train",),
    ("evaluate",),
    ("export",),
)


def run_stages(project: Path) -> None:
    """Every stage, in order, with the real CLI (as `dvc repro` runs them)."""
    for command in STAGES:
        run_kws(project, *command)


def hermetic_environment() -> dict[str, str]:
    """The test process's environment without a tracking server it may have picked up."""
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory, fsdd_dir: Path) -> Path:
    """A project folder after fetch → prepare → featurize → train (1 epoch) → evaluate → export."""
    project = tmp_path_factory.mktemp("project")
    write_params(
        project, data={**TINY, "fsdd_source": str(fsdd_dir)}, train={"epochs": 1, "batch_size": 16}
    )
    run_stages(project)
    return project


@pytest.fixture(scope="session")
def sample(tiny_project: Path) -> bytes:
    """A real FSDD recording of the tiny project (8 kHz, 16-bit mono)."""
    import csv

    with (tiny_project / "data/prepared/manifest.csv").open() as f:
        return (tiny_project / next(csv.DictReader(f))["path"]).read_bytes()  # may be relative
