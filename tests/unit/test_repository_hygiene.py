"""Git holds code and small text: data, models and caches live in DVC or nowhere."""

from __future__ import annotations

import subprocess

from tests.helpers import REPO

FORBIDDEN_PREFIXES = ("data/", "models/", "mlruns/", "mlartifacts/", ".cache/", ".venv/")


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
