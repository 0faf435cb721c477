"""Samples, speaker-disjoint splits, subsets and the manifest CSV."""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kws.errors import DataError

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "label", "speaker", "split")
_MAX_HASH = 2**27 - 1  # as Speech Commands' input_data.which_set
RANKED_BELOW = 100  # speakers: below this, splits are allocated by hash rank


@dataclass(frozen=True)
class Sample:
    """One labelled recording."""

    path: str
    label: str
    speaker: str
    split: str = "train"


def speaker_percentage(speaker: str) -> float:
    """Stable position of a speaker in [0, 100), Speech Commands' hashing scheme."""
    hashed = int(hashlib.sha1(speaker.encode()).hexdigest(), 16)
    return (hashed % (_MAX_HASH + 1)) * (100.0 / _MAX_HASH)


def assign_speaker_splits(
    speakers: Iterable[str],
    val_percent: float,
    test_percent: float,
    val_speakers: Sequence[str] = (),
    test_speakers: Sequence[str] = (),
) -> dict[str, str]:
    """Map each speaker to a split, deterministically and disjointly.

    Explicit lists win. With many speakers the Speech Commands hash thresholds
    decide; with few (under RANKED_BELOW) those percentages are too noisy, so
    speakers are ranked by the same hash and each non-zero split gets
    round(n * percent) speakers, at least one.
    """
    unique = sorted(set(speakers))
    overlap = set(val_speakers) & set(test_speakers)
    if overlap:
        raise DataError(f"speakers listed for both val and test: {sorted(overlap)}")
    if val_speakers or test_speakers:
        return {
            s: "val" if s in val_speakers else "test" if s in test_speakers else "train"
            for s in unique
        }
    if len(unique) >= RANKED_BELOW:
        return {s: _split_of(speaker_percentage(s), val_percent, test_percent) for s in unique}
    ranked = sorted(unique, key=speaker_percentage)
    n_val = max(1, round(len(unique) * val_percent / 100)) if val_percent > 0 else 0
    n_test = max(1, round(len(unique) * test_percent / 100)) if test_percent > 0 else 0
    if n_val + n_test >= len(unique):
        raise DataError(
            f"{len(unique)} speakers cannot fill train, val and test splits "
            f"({val_percent}% val, {test_percent}% test)"
        )
    return {
        s: "val" if i < n_val else "test" if i < n_val + n_test else "train"
        for i, s in enumerate(ranked)
    }


def _split_of(percentage: float, val_percent: float, test_percent: float) -> str:
    if percentage < val_percent:
        return "val"
    if percentage < val_percent + test_percent:
        return "test"
    return "train"


def with_speaker_splits(samples: Sequence[Sample], **split_args: object) -> list[Sample]:
    """Give each sample the split of its speaker."""
    mapping = assign_speaker_splits((s.speaker for s in samples), **split_args)  # type: ignore[arg-type]
    return [Sample(s.path, s.label, s.speaker, mapping[s.speaker]) for s in samples]


def subset(samples: Sequence[Sample], max_per_class: int) -> list[Sample]:
    """Keep at most max_per_class samples per (split, label), taking speakers in turn."""
    if max_per_class <= 0:
        return list(samples)
    groups: dict[tuple[str, str], dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for sample in sorted(samples, key=lambda s: s.path):
        groups[(sample.split, sample.label)][sample.speaker].append(sample)
    kept: list[Sample] = []
    for by_speaker in groups.values():
        queues = [by_speaker[s] for s in sorted(by_speaker)]
        picked: list[Sample] = []
        depth = 0
        while len(picked) < max_per_class and any(depth < len(q) for q in queues):
            picked.extend(q[depth] for q in queues if depth < len(q))
            depth += 1
        kept.extend(picked[:max_per_class])
    return sorted(kept, key=lambda s: s.path)


def write_manifest(samples: Sequence[Sample], path: Path) -> None:
    """Write the manifest CSV (path, label, speaker, split)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)
    tmp.replace(path)


def read_manifest(path: Path) -> list[Sample]:
    """Read a manifest CSV written by write_manifest."""
    if not path.is_file():
        raise DataError(f"manifest not found: {path} (run `kws data prepare` first)")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise DataError(f"{path}: expected columns {', '.join(MANIFEST_COLUMNS)}")
        return [Sample(**row) for row in reader]


def data_hash(samples: Sequence[Sample]) -> str:
    """Content hash of a dataset: every file's bytes, label, speaker and split."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.path):
        file_md5 = hashlib.md5(Path(sample.path).read_bytes()).hexdigest()
        digest.update(f"{Path(sample.path).name},{sample.label},{sample.speaker},".encode())
        digest.update(f"{sample.split},{file_md5}\n".encode())
    return digest.hexdigest()


def summary(samples: Sequence[Sample], labels: Sequence[str], dhash: str) -> dict[str, Any]:
    """Counts per split and label, speakers per split, and the data hash."""
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    speakers: dict[str, set[str]] = {split: set() for split in SPLITS}
    for s in samples:
        counts[s.split][s.label] = counts[s.split].get(s.label, 0) + 1
        speakers[s.split].add(s.speaker)
    return {
        "data_hash": dhash,
        "labels": list(labels),
        "n_samples": len(samples),
        "counts": counts,
        "speakers": {split: sorted(v) for split, v in speakers.items()},
    }
