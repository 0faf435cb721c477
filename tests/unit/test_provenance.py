"""An image holds no .git: its build's commit comes from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from kws.provenance import COMMIT_ENV, git_commit
from tests.helpers import REPO


def test_outside_a_checkout_the_commit_is_the_image_build_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(COMMIT_ENV, "0123abc")
    assert git_commit(tmp_path) == "0123abc"
    monkeypatch.delenv(COMMIT_ENV)
    assert git_commit(tmp_path) == "unknown"


def test_in_a_checkout_git_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COMMIT_ENV, "0123abc")
    assert len(git_commit(REPO)) == 40
