"""Synthetic speakers: espeak-ng voices, deterministic, train split only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf

from kws.data import synthetic


def test_voices_are_distinct_and_deterministic() -> None:
    voices = synthetic.pick_voices(50, seed=1)
    assert len({v.name for v in voices}) == 50
    assert synthetic.pick_voices(50, seed=1) == voices
    assert synthetic.pick_voices(50, seed=2) != voices
    assert all(synthetic.is_synthetic(v.name) for v in voices)


def test_generated_clips_are_trimmed_16k_speech_in_the_train_split(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng missing: `make system-deps` (CI installs it)")
    samples = synthetic.generate(tmp_path, ["seven", "yes"], n_voices=2, takes=2, seed=0)
    assert len(samples) == 8
    assert {s.split for s in samples} == {"train"}
    assert {s.label for s in samples} == {"seven", "yes"}
    for sample in samples:
        wave, rate = sf.read(sample.path)
        assert rate == 16000 and 0.1 < len(wave) / rate < 1.5
        assert abs(wave[0]) > 0 or abs(wave[-1]) > 0 or wave.std() > 0
    again = synthetic.generate(tmp_path, ["seven", "yes"], n_voices=2, takes=2, seed=0)
    assert again == samples  # reused, not regenerated
