"""A narrower embedding stack, distilled on unlabelled audio, trains and ships the default.

The research route to a graph cheap enough for AVX2-only hosts (docs/research/
cheaper-graph.md): benchmarks/narrow_stack.py distils a narrow copy of the pretrained stack
on any folder of speech and saves it; `model.embedding_stack` then trains, exports and
serves the default model on it with the real CLI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kws.data import read_manifest
from kws.data.download import sha256_file
from kws.inference import Predictor
from kws.pretrained import load_stack
from tests.conftest import hermetic_environment, run_kws
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def distil(unlabelled: Path, stack: Path, result: Path) -> subprocess.CompletedProcess[str]:
    """benchmarks/narrow_stack.py --unlabelled, at a quarter of the width, one short epoch."""
    command = [sys.executable, "benchmarks/narrow_stack.py", "--unlabelled", str(unlabelled)]
    command += ["--save-stack", str(stack), "--width", "0.25", "--epochs", "1", "--copies", "0"]
    return subprocess.run(
        [*command, "--name", str(result)],  # an absolute name keeps benchmarks/results clean
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=hermetic_environment(),
    )


def test_a_stack_distilled_on_unlabelled_audio_ships_a_smaller_default_model(
    tiny_project: Path, tmp_path: Path
) -> None:
    recordings = [
        tiny_project / s.path for s in read_manifest(tiny_project / "data/prepared/manifest.csv")
    ]
    unlabelled = tmp_path / "speech" / "nested"
    unlabelled.mkdir(parents=True)
    for path in recordings[:20]:
        shutil.copy(path, unlabelled / path.name)
    (unlabelled / "broken.wav").write_bytes(b"RIFF but not audio")
    stack = tmp_path / "stacks" / "quarter.npz"

    proc = distil(tmp_path / "speech", stack, tmp_path / "distil")
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads((tmp_path / "distil.json").read_text())["unlabelled"]
    assert figures["unlabelled"] == {"files_read": 20, "files_unreadable": 1, "clips": 20}
    assert "broken.wav" in proc.stderr  # the unreadable file is named, the run goes on
    mflop = figures["conv_mflop_per_clip"]
    assert mflop["student"] < mflop["teacher"] / 10
    assert figures["stack"]["sha256"] == sha256_file(stack)
    assert [f for kind, _, f in load_stack(stack).layout if kind == "conv"][-1] == 96

    project = tmp_path / "project"
    shutil.copytree(tiny_project, project)
    shipped_bytes = Predictor.from_path(project / "models/package").metadata["tflite_bytes"]
    on_stack = ("--set", f"model.embedding_stack={stack}")
    for stage in ("train", "evaluate"):
        run_kws(project, stage, *on_stack)
    run_kws(project, "export", "--no-register", *on_stack)
    predictor = Predictor.from_path(project / "models/package")
    assert predictor.metadata["embedding_stack"] == {
        "file": "quarter.npz",
        "sha256": sha256_file(stack),
    }
    assert predictor.metadata["tflite_bytes"] < shipped_bytes / 2
    assert predictor.predict(recordings[0]).label in predictor.labels


def test_distilling_needs_a_folder_and_a_stack_file(tmp_path: Path) -> None:
    missing = distil(tmp_path / "nowhere", tmp_path / "s.npz", tmp_path / "r")
    assert missing.returncode != 0
    assert (
        missing.stderr.strip().splitlines()[-1]
        == f"error: --unlabelled {tmp_path / 'nowhere'} is not a folder"
    )
    (tmp_path / "empty").mkdir()
    empty = distil(tmp_path / "empty", tmp_path / "s.npz", tmp_path / "r")
    assert empty.returncode != 0
    assert empty.stderr.strip().splitlines()[-1].startswith("error: no audio clips under")
    assert not (tmp_path / "s.npz").exists()
