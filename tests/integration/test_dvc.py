"""DVC: the pipeline reproduces, round-trips through a remote, and fails loudly on bad data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "docs" / "proofs"))
from dvc_proof import run_proof, write_report

pytestmark = pytest.mark.slow


def test_repro_push_clone_pull_reproduce(tmp_path: Path, fsdd_dir: Path) -> None:
    if not (REPO / ".git").exists():
        pytest.fail("the DVC proof clones the repository: run the tests from a git checkout")
    result = run_proof(REPO, tmp_path, os.fspath(fsdd_dir))
    write_report(result, tmp_path / "report.md")
    failed = [name for name, ok in result.checks.items() if not ok]
    assert not failed, f"failed checks: {failed}\nsee {tmp_path / 'report.md'}"
    assert len(result.checks) == 9
