"""Git holds code and small text: data, models and caches live in DVC or nowhere."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kws.data import fsdd
from tests.helpers import FSDD_ENV, REPO, local_fsdd

FORBIDDEN_PREFIXES = ("data/", "models/", "mlruns/", "mlartifacts/", ".cache/", ".venv/")
# split so that this file does not match itself
SIBLING_FOLDER = ("../sha" + "red", '"sha' + 'red"')


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_no_data_model_or_cache_file_is_tracked() -> None:
    offenders = [f for f in tracked_files() if f.startswith(FORBIDDEN_PREFIXES)]
    assert not offenders


def test_no_tracked_file_is_over_1_mb_except_docs_images() -> None:
    big = [
        f
        for f in tracked_files()
        if (REPO / f).is_file()
        and (REPO / f).stat().st_size > 1_000_000
        and not (f.startswith("docs/") and f.endswith((".png", ".jpg", ".svg")))
    ]
    assert not big


def test_dvc_tracks_the_pipeline_outputs() -> None:
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = {
        o if isinstance(o, str) else next(iter(o))
        for s in stages.values()
        for o in s.get("outs", [])
    }
    assert {"data/raw", "data/prepared", "data/features", "models/train", "models/package"} <= outs
    assert all(s["cmd"].startswith("kws ") for s in stages.values())


def test_python_code_never_reaches_into_a_folder_beside_the_repository() -> None:
    code = [f for f in tracked_files() if f.endswith(".py") and (REPO / f).is_file()]
    offenders = [f for f in code if any(s in (REPO / f).read_text() for s in SIBLING_FOLDER)]
    assert not offenders


def test_tests_find_the_fsdd_through_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FSDD_ENV, raising=False)
    # unset: the real download path, here pointed at a closed local port (no network)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(fsdd.URL_ENV, "http://127.0.0.1:9/fsdd.tar.gz")
    with pytest.raises(LookupError, match=f"offline: set {FSDD_ENV}"):
        local_fsdd()
    monkeypatch.setenv(FSDD_ENV, str(tmp_path))
    with pytest.raises(LookupError, match="no recordings/ folder"):
        local_fsdd()
    (tmp_path / "recordings").mkdir()
    assert local_fsdd() == tmp_path.resolve()
    monkeypatch.setenv(FSDD_ENV, str(tmp_path / "recordings"))
    assert local_fsdd() == tmp_path.resolve()
