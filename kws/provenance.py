"""Where a result came from: git commit, dirty flag, data hash, params hash."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

COMMIT_ENV = "KWS_GIT_COMMIT"  # set by images built from a checkout (they hold no .git)


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit(cwd: Path | None = None) -> str:
    """HEAD commit; outside a git checkout $KWS_GIT_COMMIT (an image's build), else 'unknown'."""
    return _git("rev-parse", "HEAD", cwd=cwd) or os.environ.get(COMMIT_ENV) or "unknown"


def git_dirty(cwd: Path | None = None) -> bool:
    """Whether tracked files differ from HEAD."""
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return bool(status)


def provenance(data_hash: str, params_hash: str) -> dict[str, object]:
    """The traceability record stored with every model."""
    return {
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "data_hash": data_hash,
        "params_hash": params_hash,
    }
