"""The default params.yaml needs no optional system package: a fresh laptop runs it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import run_kws
from tests.helpers import write_params

OPTIONAL_TOOLS = ("espeak-ng", "espeak", "flite")  # synthetic voices only (make system-deps)


def path_without(tools: tuple[str, ...], shadow: Path) -> str:
    """A PATH of one folder linking every executable of $PATH except tools."""
    shadow.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not Path(folder).is_dir():
            continue
        for exe in Path(folder).iterdir():
            link = shadow / exe.name
            if exe.name not in tools and not link.exists() and os.access(exe, os.X_OK):
                link.symlink_to(exe)
    return str(shadow)


def test_default_config_prepares_and_featurizes_without_espeak_ng_or_flite(
    tmp_path: Path, fsdd_dir: Path
) -> None:
    path = path_without(OPTIONAL_TOOLS, tmp_path / "bin")
    assert all(shutil.which(tool, path=path) is None for tool in OPTIONAL_TOOLS)
    project = tmp_path / "project"
    project.mkdir()
    write_params(project, data={"fsdd_source": str(fsdd_dir), "max_per_class": 4})
    for command in (["data", "fetch"], ["data", "prepare"], ["featurize"]):
        run_kws(project, *command, env={"PATH": path})
    manifest = (project / "data/prepared/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 4 * 10 * 3  # 4 clips per class in each split, all FSDD
    assert (project / "data/features/features.npz").is_file()
