"""Data sources (fsdd, speech_commands, speech_commands_tfds, folder) and the manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kws.data import fsdd, speech_commands, synthetic
from kws.data.manifest import (
    Sample,
    data_hash,
    read_manifest,
    subset,
    summary,
    with_speaker_splits,
    write_manifest,
)
from kws.errors import DataError
from kws.files import read_json, write_json
from kws.params import Params

log = logging.getLogger(__name__)

SOURCES = ("fsdd", "speech_commands", "speech_commands_tfds", "folder")
MANIFEST = "manifest.csv"
DATA_INFO = "data_info.json"

__all__ = [
    "DATA_INFO",
    "MANIFEST",
    "SOURCES",
    "Sample",
    "fetch",
    "labels_of",
    "load_prepared",
    "prepare",
    "raw_root",
    "read_info",
    "read_manifest",
    "scan_labelled_folder",
]


def fetch(params: Params) -> Path:
    """Bring the raw dataset named by params.data.source into params.paths.raw."""
    source, raw = params.data.source, Path(params.paths.raw)
    if source == "fsdd":
        return fsdd.fetch(raw, params.data.fsdd_source)
    if source == "speech_commands":
        return speech_commands.fetch(raw, params.data.speech_commands_source)
    if source == "speech_commands_tfds":
        return raw  # tfds keeps its own prepared copy (TFDS_DATA_DIR)
    if source == "folder":
        if not params.data.folder or not Path(params.data.folder).is_dir():
            raise DataError(f"data.folder must name an existing folder, got {params.data.folder!r}")
        return Path(params.data.folder)
    raise DataError(f"unknown data.source {source!r} (choose from {', '.join(SOURCES)})")


def raw_root(params: Params) -> Path:
    """Where fetch left the raw data of params.data.source (nothing is downloaded here)."""
    source, raw = params.data.source, Path(params.paths.raw)
    if source == "folder":
        return fetch(params)  # the user's own folder: nothing to copy
    root = {"fsdd": fsdd.location(raw), "speech_commands": speech_commands.location(raw)}.get(
        source, raw
    )
    if source != "speech_commands_tfds" and not root.is_dir():
        raise DataError(f"no raw data in {root}: run `kws data fetch` first")
    return root


def scan_labelled_folder(folder: Path) -> list[Sample]:
    """Samples of a folder in FSDD layout ({digit}_{speaker}_{i}.wav) or label/*.wav layout."""
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    flat = fsdd.scan(folder)
    if flat:
        return flat
    samples = []
    for path in sorted(folder.glob("*/*.wav")):
        parsed = fsdd.parse_name(path.name)
        if parsed:
            speaker = parsed[1]
        elif "_nohash_" in path.name:
            speaker = speech_commands.speaker_of(path)
        else:
            speaker = path.stem
        samples.append(Sample(str(path), path.parent.name, speaker))
    if not samples:
        raise DataError(
            f"{folder}: no WAVs in FSDD ({{digit}}_{{speaker}}_{{i}}.wav) or label/*.wav layout"
        )
    return samples


def labels_of(source: str, samples: list[Sample]) -> list[str]:
    """Class names in model output order."""
    if source == "fsdd":
        return list(fsdd.LABELS)
    if source.startswith("speech_commands"):
        return list(speech_commands.LABELS)
    return sorted({s.label for s in samples})


def read_info(prepared: Path) -> dict[str, Any]:
    """The data summary (labels, counts, speakers, data hash) written by prepare."""
    return dict(read_json(prepared / DATA_INFO, "run `kws data prepare` first"))


def load_prepared(params: Params) -> tuple[list[Sample], dict[str, Any]]:
    """The prepared manifest and its data summary."""
    prepared = Path(params.paths.prepared)
    info = read_info(prepared)
    return read_manifest(prepared / MANIFEST), info


def prepare(params: Params) -> tuple[list[Sample], dict[str, Any]]:
    """Build the split manifest and data summary from the fetched raw data (no download)."""
    raw = raw_root(params)
    out = Path(params.paths.prepared)
    d = params.data
    if d.source == "speech_commands":
        samples = speech_commands.prepare(
            raw, out, d.silence_percent, d.unknown_percent, params.seed
        )
    elif d.source == "speech_commands_tfds":
        samples = speech_commands.materialise_tfds(out / "tfds")
    else:
        scanned = fsdd.scan(raw) if d.source == "fsdd" else scan_labelled_folder(raw)
        samples = with_speaker_splits(
            scanned,
            val_percent=d.val_percent,
            test_percent=d.test_percent,
            val_speakers=d.val_speakers,
            test_speakers=d.test_speakers,
        )
    if not samples:
        raise DataError(f"no samples found for source {d.source!r} in {raw}")
    labels = labels_of(d.source, samples)
    words = [w for w in labels if not w.startswith("_")]
    for engine, n_voices in (
        ("espeak-ng", d.synthetic_voices),
        ("flite", d.synthetic_flite_voices),
    ):
        if n_voices > 0:
            samples += synthetic.generate(
                out / "synthetic", words, n_voices, d.synthetic_takes, params.seed, engine=engine
            )
    samples = subset(samples, d.max_per_class)
    info = summary(samples, labels, data_hash(samples))
    write_manifest(samples, out / MANIFEST)
    write_json(info, out / DATA_INFO)
    log.info(
        "prepared %d samples: %s",
        len(samples),
        {k: sum(v.values()) for k, v in info["counts"].items()},
    )
    return samples, info
