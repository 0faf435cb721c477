"""The demo's serving story against a real server: serve the champion, gate-promote the
challenger, hot swap, roll back; every /predict answer names the version the story expects."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kws.cli.demo import Story, free_port, predict, running_server, swap_story, unseen_speaker_clip
from tests.conftest import run_kws

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tiny_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tiny project with two registered versions (champion v1, challenger v2)."""
    copy = tmp_path / "project"
    shutil.copytree(tiny_project, copy)
    run_kws(copy, "train", "--set", "seed=7")
    run_kws(copy, "evaluate")
    run_kws(copy, "export")
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return copy


def test_serve_promote_hot_swap_and_rollback_answer_from_the_expected_versions(
    project: Path,
) -> None:
    versions = run_kws(project, "registry", "list").stdout
    assert "challenger" in versions and "champion" in versions
    champion, challenger = "1", "2"
    wav = project / unseen_speaker_clip(project / "data/prepared")
    story = Story()
    with running_server("models:/kws@champion", free_port(), poll=0.5) as url:
        assert predict(url, wav)["model"] == {
            "name": "kws",
            "version": champion,
            "alias": "champion",
        }
        # a negative margin: the tiny models are equally bad, the gate must still promote
        swap_story(url, wav, champion, challenger, story, "--set", "registry.gate_margin=-1")
        assert predict(url, wav)["model"]["version"] == champion
    assert [when for when, _ in story.answers] == [
        f"v{challenger} after the gate",
        f"v{champion} after the rollback",
    ]
    history = run_kws(project, "registry", "show", challenger).stdout
    assert '"action": "promote"' in history and '"action": "rollback"' in history
