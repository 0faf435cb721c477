"""Downloads with progress and checksums, and safe archive extraction."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from kws.errors import DataError

log = logging.getLogger(__name__)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Download url to dest (resumable by rerun), verify its checksum, return dest."""
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        log.info("already downloaded: %s", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {exc}") from exc
    if sha256 is not None:
        actual = sha256_file(partial)
        if actual != sha256:
            partial.unlink(missing_ok=True)
            raise DataError(f"checksum mismatch for {url}: expected {sha256}, got {actual}")
    os.replace(partial, dest)
    return dest


def is_archive(path: Path) -> bool:
    """Whether the path names an archive format we extract."""
    return path.name.endswith(ARCHIVE_SUFFIXES)


def extract(
    archive: Path, dest: Path, keep: Callable[[str], bool] = lambda name: True
) -> list[Path]:
    """Extract the members of an archive that `keep` accepts; refuse unsafe paths."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in zf.infolist() if not m.is_dir() and keep(m.filename)]
                for member in tqdm(members, desc=f"extract {archive.name}", unit="file"):
                    target = _safe_target(dest, member.filename)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, target.open("wb") as out:
                        shutil.copyfileobj(src, out)
                    written.append(target)
        else:
            with tarfile.open(archive) as tf:
                for member in tqdm(tf, desc=f"extract {archive.name}", unit="file"):
                    if not member.isfile() or not keep(member.name):
                        continue
                    target = _safe_target(dest, member.name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    member_file = tf.extractfile(member)
                    if member_file is None:
                        continue
                    with member_file, target.open("wb") as out:
                        shutil.copyfileobj(member_file, out)
                    written.append(target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from exc
    return written


def _safe_target(dest: Path, name: str) -> Path:
    target = (dest / name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DataError(f"archive member escapes the target folder: {name}")
    return target
