"""Splits are speaker-disjoint, deterministic, and follow Speech Commands' hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from kws.data import fsdd
from kws.data.manifest import (
    Sample,
    assign_speaker_splits,
    read_manifest,
    speaker_percentage,
    subset,
    with_speaker_splits,
    write_manifest,
)
from kws.errors import DataError


def test_fsdd_splits_are_speaker_disjoint_and_cover_every_split(fsdd_dir: Path) -> None:
    samples = with_speaker_splits(
        fsdd.scan(fsdd_dir / "recordings"), val_percent=20, test_percent=20
    )
    speakers = {
        split: {s.speaker for s in samples if s.split == split}
        for split in ("train", "val", "test")
    }
    assert all(speakers.values())
    assert not (speakers["train"] & speakers["val"])
    assert not (speakers["train"] & speakers["test"])
    assert not (speakers["val"] & speakers["test"])
    assert len(samples) == 2500


def test_splits_are_deterministic_whatever_the_input_order() -> None:
    speakers = [f"spk{i}" for i in range(7)]
    first = assign_speaker_splits(speakers, 20, 20)
    assert assign_speaker_splits(list(reversed(speakers)), 20, 20) == first


def test_many_speakers_follow_the_speech_commands_hash_thresholds() -> None:
    speakers = [f"{i:08x}" for i in range(500)]
    mapping = assign_speaker_splits(speakers, 10, 10)
    for speaker, split in mapping.items():
        pct = speaker_percentage(speaker)
        expected = "val" if pct < 10 else "test" if pct < 20 else "train"
        assert split == expected
    share = sum(s == "val" for s in mapping.values()) / len(mapping)
    assert 0.05 < share < 0.15


def test_explicit_speaker_lists_win_and_may_not_overlap() -> None:
    mapping = assign_speaker_splits(
        ["a", "b", "c"], 20, 20, val_speakers=["b"], test_speakers=["c"]
    )
    assert mapping == {"a": "train", "b": "val", "c": "test"}
    with pytest.raises(DataError, match="both val and test"):
        assign_speaker_splits(["a", "b"], 20, 20, val_speakers=["a"], test_speakers=["a"])


def test_too_few_speakers_for_three_splits_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="cannot fill"):
        assign_speaker_splits(["a", "b"], 20, 20)


def test_subset_keeps_n_per_split_and_label_drawing_from_every_speaker() -> None:
    samples = [Sample(f"{spk}_{i}.wav", "yes", spk, "train") for spk in "abc" for i in range(5)]
    kept = subset(samples, 4)
    assert len(kept) == 4
    assert {s.speaker for s in kept} == {"a", "b", "c"}
    assert subset(samples, 4) == kept


def test_manifest_round_trip(tmp_path: Path) -> None:
    samples = [Sample("x/1.wav", "yes", "a", "train"), Sample("x/2.wav", "no", "b", "test")]
    write_manifest(samples, tmp_path / "manifest.csv")
    assert read_manifest(tmp_path / "manifest.csv") == samples
    assert (tmp_path / "manifest.csv").read_text().splitlines()[0] == "path,label,speaker,split"
