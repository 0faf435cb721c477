"""Synthetic speakers: espeak-ng and flite voices, deterministic, train split only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf

from kws.data import synthetic

# Optional Debian packages (`make system-deps`); CI installs them, so these run there.
needs_espeak_ng = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not on PATH (make system-deps)"
)
needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite not on PATH (make system-deps)"
)


def test_voices_are_distinct_and_deterministic() -> None:
    voices = synthetic.pick_voices(50, seed=1)
    assert len({v.name for v in voices}) == 50
    assert synthetic.pick_voices(50, seed=1) == voices
    assert synthetic.pick_voices(50, seed=2) != voices
    assert all(synthetic.is_synthetic(v.name) for v in voices)


@needs_espeak_ng
def test_generated_clips_are_trimmed_16k_speech_in_the_train_split(tmp_path: Path) -> None:
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


def test_flite_voices_cover_every_base_voice_with_distinct_pitches() -> None:
    voices = synthetic.pick_voices(12, seed=0, engine="flite")
    assert len({v.name for v in voices}) == 12
    assert {v.variant for v in voices} == set(synthetic.FLITE_VOICES)
    assert all(v.name.startswith("tts-flite-") and 70 <= v.pitch <= 260 for v in voices)
    assert synthetic.pick_voices(12, seed=0, engine="flite") == voices


@needs_flite
def test_flite_clips_are_trimmed_16k_speech(tmp_path: Path) -> None:
    samples = synthetic.generate(tmp_path, ["seven"], n_voices=4, takes=1, seed=0, engine="flite")
    assert len(samples) == 4 and {s.split for s in samples} == {"train"}
    for sample in samples:
        wave, rate = sf.read(sample.path)
        assert rate == 16000 and 0.2 < len(wave) / rate < 1.5 and wave.std() > 0.01


def test_an_unknown_engine_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(synthetic.DataError, match="unknown synthesis engine"):
        synthetic.generate(tmp_path, ["seven"], n_voices=1, takes=1, seed=0, engine="sam")
