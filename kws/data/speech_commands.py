"""Speech Commands v0.02, standard 12-class task (10 words, _silence_, _unknown_)."""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from kws.data.download import download, extract, is_archive
from kws.data.manifest import Sample
from kws.errors import DataError

log = logging.getLogger(__name__)

URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
SOURCE_ENV = "KWS_SPEECH_COMMANDS_SOURCE"
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN, BACKGROUND = "_silence_", "_unknown_", "_background_noise_"
LABELS = (*WORDS, SILENCE, UNKNOWN)
SAMPLE_RATE = 16000
_DONE_MARKER = ".fetched"


def location(raw_root: Path) -> Path:
    """The folder fetch fills with the extracted dataset."""
    return raw_root / "speech_commands"


def fetch(raw_root: Path, source: str | None = None) -> Path:
    """Put the extracted dataset in raw_root/speech_commands and return that folder."""
    target = location(raw_root)
    source = os.environ.get(SOURCE_ENV) or source
    marker = target / _DONE_MARKER
    if marker.is_file() and marker.read_text().strip() == (source or URL):
        return target
    shutil.rmtree(target, ignore_errors=True)
    if source and Path(source).is_dir():
        _check_layout(Path(source))
        shutil.copytree(source, target)
    else:
        if source:
            archive = Path(source)
            if not (archive.is_file() and is_archive(archive)):
                raise DataError(f"Speech Commands source must be a folder or archive: {source}")
        else:
            archive = download(URL, raw_root / "downloads" / "speech_commands_v0.02.tar.gz", SHA256)
        extract(archive, target)
        _check_layout(target)
    marker.write_text((source or URL) + "\n")
    return target


def _check_layout(root: Path) -> None:
    if not (root / "validation_list.txt").is_file() or not (root / "testing_list.txt").is_file():
        raise DataError(
            f"{root}: not Speech Commands (validation_list.txt/testing_list.txt missing)"
        )


def speaker_of(path: Path) -> str:
    """Speaker id of a recording: the part of the name before `_nohash_`."""
    return path.name.split("_nohash_")[0]


def prepare(
    root: Path,
    out_dir: Path,
    silence_percent: float,
    unknown_percent: float,
    seed: int,
) -> list[Sample]:
    """Samples of the 12-class task, split by the official lists; writes silence clips."""
    _check_layout(root)
    val_list = set((root / "validation_list.txt").read_text().split())
    test_list = set((root / "testing_list.txt").read_text().split())
    words: list[Sample] = []
    unknown: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for path in sorted(root.glob("*/*.wav")):
        word = path.parent.name
        if word == BACKGROUND:
            continue
        rel = f"{word}/{path.name}"
        split = "val" if rel in val_list else "test" if rel in test_list else "train"
        label = word if word in WORDS else UNKNOWN
        sample = Sample(str(path), label, speaker_of(path), split)
        (words.append(sample) if label != UNKNOWN else unknown[split].append(sample))
    rng = random.Random(seed)
    samples = list(words)
    for split in ("train", "val", "test"):
        n_words = sum(1 for s in words if s.split == split)
        pool = unknown[split]
        rng.shuffle(pool)
        samples += pool[: round(n_words * unknown_percent / 100)]
        n_silence = round(n_words * silence_percent / 100)
        samples += _silence_clips(root / BACKGROUND, out_dir / "silence", split, n_silence, rng)
    return sorted(samples, key=lambda s: s.path)


def _silence_clips(
    noise_dir: Path, out_dir: Path, split: str, count: int, rng: random.Random
) -> list[Sample]:
    """Cut 1 s clips from the background noise, each split from its own time range."""
    noises = sorted(noise_dir.glob("*.wav"))
    if count == 0:
        return []
    if not noises:
        raise DataError(f"{noise_dir}: no background noise to cut {SILENCE} clips from")
    # train/val/test take disjoint stretches (0-80%, 80-90%, 90-100%) of every noise file
    lo, hi = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}[split]
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in tqdm(range(count), desc=f"cut {SILENCE} ({split})", unit="clip"):
        noise_path = noises[i % len(noises)]
        wave, rate = sf.read(noise_path, dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
        start_lo, start_hi = int(lo * len(wave)), int(hi * len(wave)) - rate
        if start_hi <= start_lo:
            raise DataError(f"{noise_path}: too short to cut 1 s {SILENCE} clips for {split}")
        start = rng.randrange(start_lo, start_hi)
        clip = wave[start : start + rate] * rng.uniform(0.1, 1.0)
        path = out_dir / f"{split}_{i:05d}.wav"
        sf.write(path, clip, rate, subtype="PCM_16")
        samples.append(Sample(str(path), SILENCE, f"{noise_path.stem}@{split}", split))
    return samples


def tfds_examples(split: str, data_dir: str | None = None) -> Iterator[tuple[np.ndarray, str]]:
    """(int16 waveform at 16 kHz, label) from tensorflow-datasets' `speech_commands` builder."""
    import tensorflow_datasets as tfds  # train extra only

    tfds_split = {"train": "train", "val": "validation", "test": "test"}[split]
    dataset = tfds.load("speech_commands", split=tfds_split, data_dir=data_dir, download=False)
    names = tfds.builder("speech_commands", data_dir=data_dir).info.features["label"].names
    for example in tfds.as_numpy(dataset):
        yield np.asarray(example["audio"], dtype=np.int16), names[int(example["label"])]


def materialise_tfds(out_dir: Path, data_dir: str | None = None, limit: int = 0) -> list[Sample]:
    """Write the tfds splits as WAV files so the rest of the pipeline sees plain files."""
    samples = []
    for split in ("train", "val", "test"):
        for i, (wave, label) in enumerate(tfds_examples(split, data_dir)):
            if limit and i >= limit:
                break
            path = out_dir / split / label / f"{i:06d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
            # tfds drops speaker ids; its splits come from the speaker-disjoint official lists
            samples.append(Sample(str(path), label, f"tfds-{split}", split))
    return samples
