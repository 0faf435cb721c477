"""Synthetic speakers: espeak-ng voices saying the task's words, for the train split only.

Each synthetic speaker is an accent, a voice variant and a base pitch and speed;
each take jitters pitch and speed. Generated on demand (Debian: `espeak-ng`),
never committed.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from kws.audio import decode, resample
from kws.data.manifest import Sample
from kws.errors import DataError

SPEAKER_PREFIX = "tts-"
ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt5",
    "klatt6",
    "adam",
    "alex",
    "andy",
    "annie",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "ed",
    "edward",
    "gene",
    "grandma",
    "grandpa",
    "gustave",
    "iven",
    "iven2",
    "iven3",
    "john",
    "kaukovalta",
    "linda",
    "max",
    "michel",
    "miguel",
    "norbert",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "sandro",
    "shelby",
    "steph",
    "travis",
    "victor",
    "zac",
)
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker."""

    accent: str
    variant: str
    pitch: int  # espeak-ng -p, 0..99
    speed: int  # espeak-ng -s, words per minute

    @property
    def name(self) -> str:
        """Speaker id, safe in file names."""
        return f"{SPEAKER_PREFIX}{self.accent}-{self.variant}-p{self.pitch}-s{self.speed}"


def is_synthetic(speaker: str) -> bool:
    """Whether a speaker id names a synthetic voice."""
    return speaker.startswith(SPEAKER_PREFIX)


def pick_voices(n: int, seed: int) -> list[Voice]:
    """n distinct voices, deterministic for a seed."""
    rng = random.Random(seed)
    combos = [(a, v) for a in ACCENTS for v in VARIANTS]
    rng.shuffle(combos)
    return [Voice(a, v, rng.randint(25, 75), rng.randint(130, 200)) for a, v in combos[:n]]


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("data.synthetic_voices needs espeak-ng (Debian: apt-get install espeak-ng)")
    return exe


def _say(exe: str, voice: Voice, word: str, take: int, rng: random.Random) -> np.ndarray:
    pitch = min(99, max(0, voice.pitch + rng.randint(-8, 8)))
    speed = voice.speed + rng.randint(-15, 15) if take else voice.speed
    with tempfile.NamedTemporaryFile(suffix=".wav") as out:
        subprocess.run(
            [
                exe,
                "-v",
                f"{voice.accent}+{voice.variant}",
                "-p",
                str(pitch),
                "-s",
                str(speed),
                "-w",
                out.name,
                word,
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wave, rate = decode(out.name)
    return trim_silence(resample(wave, rate, SAMPLE_RATE))


def trim_silence(wave: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing samples quieter than threshold_db below the peak."""
    level = np.abs(wave)
    loud = np.nonzero(level > level.max() * 10 ** (threshold_db / 20))[0]
    return wave[loud[0] : loud[-1] + 1] if loud.size else wave


def generate(
    out_dir: Path,
    words: list[str],
    n_voices: int,
    takes: int,
    seed: int,
    spoken: dict[str, str] | None = None,
) -> list[Sample]:
    """Write n_voices x takes recordings of every word; reuse them when already there."""
    exe = _espeak()
    voices = pick_voices(n_voices, seed)
    jobs = [(v, w, t) for v in voices for w in words for t in range(takes)]

    def path_of(voice: Voice, word: str, take: int) -> Path:
        return out_dir / word / f"{voice.name}_{take}.wav"

    def make(job: tuple[Voice, str, int]) -> Sample:
        voice, word, take = job
        path = path_of(voice, word, take)
        if not path.is_file():
            rng = random.Random(f"{seed}-{voice.name}-{word}-{take}")
            wave = _say(exe, voice, (spoken or {}).get(word, word), take, rng)
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
        return Sample(str(path), word, voice.name, "train")

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(tqdm(pool.map(make, jobs), total=len(jobs), desc="synthesize", unit="clip"))
