"""Features of a whole manifest (training data): one row per clip, cached by content."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kws.audio import load_clip
from kws.data.manifest import Sample
from kws.errors import AudioError, DataError
from kws.features import features_of
from kws.params import FeatureParams

log = logging.getLogger(__name__)
FEATURES_FILE = "features.npz"


@dataclass
class FeatureSet:
    """Features of a whole manifest, aligned with its samples."""

    x: np.ndarray  # (n, frames, n_mels) float32
    labels: np.ndarray  # (n,) str
    splits: np.ndarray  # (n,) str
    paths: np.ndarray  # (n,) str
    skipped: list[str]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of one split."""
        mask = self.splits == name
        return self.x[mask], self.labels[mask]


def cache_key(fp: FeatureParams, dhash: str) -> str:
    """Cache key: the feature parameters and the data content hash."""
    blob = json.dumps({"features": dataclasses.asdict(fp), "data": dhash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def featurize_samples(
    samples: Sequence[Sample], fp: FeatureParams, cache_dir: Path | None = None, dhash: str = ""
) -> FeatureSet:
    """Features of every sample, from the cache when the data, its location and the
    parameters are unchanged (the rows name their files, so a copy elsewhere is a miss)."""
    key = cache_key(fp, dhash)
    located = hashlib.sha256("\n".join(sorted(s.path for s in samples)).encode()).hexdigest()
    cache = cache_dir / f"features-{key}-{located[:8]}.npz" if cache_dir and dhash else None
    if cache is not None and cache.is_file():
        log.info("features from cache %s", cache)
        return load_feature_set(cache)
    rows, kept, skipped = [], [], []
    for sample in tqdm(samples, desc="features", unit="file"):
        try:
            rows.append(features_of(sample.path, fp))
            kept.append(sample)
        except AudioError as exc:
            skipped.append(f"{sample.path}: {exc}")
    if skipped:
        log.warning("skipped %d unreadable file(s), e.g. %s", len(skipped), skipped[0])
    if not rows:
        raise DataError("no readable audio: every file was skipped")
    fs = FeatureSet(
        x=np.stack(rows),
        labels=np.array([s.label for s in kept]),
        splits=np.array([s.split for s in kept]),
        paths=np.array([s.path for s in kept]),
        skipped=skipped,
    )
    if cache is not None:
        save_feature_set(fs, cache, key)
    return fs


def save_feature_set(fs: FeatureSet, path: Path, key: str = "") -> None:
    """Write a FeatureSet atomically (npz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp,
        x=fs.x,
        labels=fs.labels,
        splits=fs.splits,
        paths=fs.paths,
        skipped=np.array(fs.skipped, dtype=str),
        key=np.array(key),
    )
    tmp.replace(path)


def load_feature_set(path: Path) -> FeatureSet:
    """Read a FeatureSet written by save_feature_set."""
    if not path.is_file():
        raise DataError(f"features not found: {path} (run `kws featurize` first)")
    with np.load(path) as z:
        return FeatureSet(z["x"], z["labels"], z["splits"], z["paths"], list(z["skipped"]))


def stored_key(path: Path) -> str:
    """The cache key a features file was written with ('' if none)."""
    with np.load(path) as z:
        return str(z["key"]) if "key" in z else ""


def clips_of(paths: Sequence[str], fp: FeatureParams, cache_dir: Path | None = None) -> np.ndarray:
    """Fixed-length clips (n, samples) of readable files, for augmentation; cached by content."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(fp), sort_keys=True).encode())
    for path in paths:
        digest.update(path.encode() + hashlib.md5(Path(path).read_bytes()).digest())
    cache = cache_dir / f"clips-{digest.hexdigest()[:16]}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        return np.load(cache)
    clips = np.stack(
        [
            load_clip(p, fp.sample_rate, fp.clip_samples)
            for p in tqdm(paths, desc="decode clips", unit="file")
        ]
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npy")
        np.save(tmp, clips)
        tmp.replace(cache)
    return clips
