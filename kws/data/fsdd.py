"""Free Spoken Digit Dataset v1.0.10: download or local copy, verified per file."""

from __future__ import annotations

import logging
import os
import re
import shutil
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from kws.data.download import download, extract, is_archive, sha256_file
from kws.data.manifest import Sample
from kws.errors import DataError

log = logging.getLogger(__name__)

VERSION = "v1.0.10"
URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/{VERSION}.tar.gz"
SOURCE_ENV = "KWS_FSDD_SOURCE"
URL_ENV = "KWS_FSDD_URL"  # mirrors (and the download test) point the real download elsewhere
LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FILE_PATTERN = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z0-9-]+)_(?P<index>\d+)\.wav$")
_DONE_MARKER = ".fetched"


def known_checksums() -> dict[str, str]:
    """SHA-256 of every recording we can verify, by file name."""
    text = resources.files("kws.resources").joinpath("fsdd-v1.0.10.sha256").read_text()
    pairs = (line.split() for line in text.splitlines() if line and not line.startswith("#"))
    return {Path(name).name: digest for digest, name in pairs}


def parse_name(name: str) -> tuple[str, str] | None:
    """(label, speaker) from an FSDD file name, or None if it is not one."""
    match = FILE_PATTERN.match(name)
    if match is None:
        return None
    return LABELS[int(match["digit"])], match["speaker"]


def location(raw_root: Path) -> Path:
    """The folder fetch fills with the recordings."""
    return raw_root / "fsdd" / "recordings"


def fetch(raw_root: Path, source: str | None = None) -> Path:
    """Put verified FSDD recordings in raw_root/fsdd/recordings and return that folder."""
    target = location(raw_root)
    source = os.environ.get(SOURCE_ENV) or source
    marker = target.parent / _DONE_MARKER
    if marker.is_file() and marker.read_text().strip() == (source or URL):
        log.info("FSDD already fetched in %s", target)
        return target
    staging = target.parent / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    if source:
        _stage_local(Path(source), staging)
    else:
        archive = download(
            os.environ.get(URL_ENV, URL), raw_root / "downloads" / f"fsdd-{VERSION}.tar.gz"
        )
        _stage_archive(archive, staging)
    verify(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    marker.write_text((source or URL) + "\n")
    return target


def _stage_local(source: Path, staging: Path) -> None:
    if not source.exists():
        raise DataError(f"FSDD source not found: {source}")
    if source.is_file() and is_archive(source):
        _stage_archive(source, staging)
        return
    if not source.is_dir():
        raise DataError(f"FSDD source must be a folder or an archive (.tar.gz/.zip): {source}")
    folder = source / "recordings" if (source / "recordings").is_dir() else source
    files = sorted(p for p in folder.glob("*.wav") if parse_name(p.name))
    if not files:
        raise DataError(f"no FSDD recordings ({{digit}}_{{speaker}}_{{i}}.wav) in {folder}")
    staging.mkdir(parents=True)
    for path in tqdm(files, desc="copy FSDD", unit="file"):
        shutil.copy2(path, staging / path.name)


def _stage_archive(archive: Path, staging: Path) -> None:
    def is_recording(name: str) -> bool:
        return "/recordings/" in f"/{name}" and parse_name(Path(name).name) is not None

    unpacked = staging.parent / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    files = extract(archive, unpacked, keep=is_recording)
    if not files:
        raise DataError(f"{archive} holds no FSDD recordings/ folder")
    staging.mkdir(parents=True)
    for path in files:
        path.replace(staging / path.name)
    shutil.rmtree(unpacked, ignore_errors=True)


def verify(folder: Path) -> None:
    """Check every known recording is present and intact; report the unverifiable ones."""
    expected = known_checksums()
    present = {p.name: p for p in folder.glob("*.wav")}
    missing = sorted(set(expected) - set(present))
    if missing:
        raise DataError(
            f"FSDD {VERSION} incomplete: {len(missing)} recordings missing (e.g. {missing[0]})"
        )
    bad = [
        n
        for n in tqdm(sorted(expected), desc="verify FSDD", unit="file")
        if sha256_file(present[n]) != expected[n]
    ]
    if bad:
        raise DataError(f"FSDD checksum mismatch for {len(bad)} recordings (e.g. {bad[0]})")
    unverified = sorted(set(present) - set(expected))
    if unverified:
        speakers = sorted({parse_name(n)[1] for n in unverified if parse_name(n)})  # type: ignore[index]
        log.warning(
            "%d recordings have no known checksum (speakers: %s)",
            len(unverified),
            ", ".join(speakers),
        )


def scan(folder: Path) -> list[Sample]:
    """Samples of an FSDD-layout folder (flat {digit}_{speaker}_{i}.wav)."""
    samples = []
    for path in sorted(folder.glob("*.wav")):
        parsed = parse_name(path.name)
        if parsed:
            samples.append(Sample(str(path), parsed[0], parsed[1]))
    return samples
