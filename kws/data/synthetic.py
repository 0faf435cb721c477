"""Synthetic speakers: text-to-speech voices saying the task's words, for the train split only.

Two engines, both Debian packages: `espeak-ng` (formant synthesis: an accent, a voice
variant, a base pitch and speed make a speaker) and `flite` (CMU's statistical parametric
voices awb, rms, slt and the kal16 diphone voice, at a base f0 and duration stretch).
Each take jitters pitch and speed. Generated on demand, never committed.
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

from kws.audio import decode, loud_span, resample
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
FLITE_VOICES = ("awb", "rms", "slt", "kal16")
ENGINES = ("espeak-ng", "flite")
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker."""

    accent: str
    variant: str
    pitch: int  # espeak-ng: -p 0..99; flite: mean f0 in Hz
    speed: int  # espeak-ng: -s words per minute; flite: duration stretch in percent
    engine: str = "espeak-ng"

    @property
    def name(self) -> str:
        """Speaker id, safe in file names."""
        if self.engine == "flite":
            return f"{SPEAKER_PREFIX}flite-{self.variant}-f{self.pitch}-d{self.speed}"
        return f"{SPEAKER_PREFIX}{self.accent}-{self.variant}-p{self.pitch}-s{self.speed}"


def is_synthetic(speaker: str) -> bool:
    """Whether a speaker id names a synthetic voice."""
    return speaker.startswith(SPEAKER_PREFIX)


def pick_voices(n: int, seed: int, engine: str = "espeak-ng") -> list[Voice]:
    """n distinct voices of an engine, deterministic for a seed."""
    if engine == "flite":
        return _pick_flite_voices(n, seed)
    rng = random.Random(seed)
    combos = [(a, v) for a in ACCENTS for v in VARIANTS]
    rng.shuffle(combos)
    return [Voice(a, v, rng.randint(25, 75), rng.randint(130, 200)) for a, v in combos[:n]]


def _pick_flite_voices(n: int, seed: int) -> list[Voice]:
    """Flite voices spread over f0 70-260 Hz and duration stretch 80-130 %."""
    rng = random.Random(f"{seed}-flite")
    voices: dict[str, Voice] = {}
    while len(voices) < n:
        base = FLITE_VOICES[len(voices) % len(FLITE_VOICES)]
        voice = Voice("us", base, rng.randint(70, 260), rng.randint(80, 130), "flite")
        voices.setdefault(voice.name, voice)
    return list(voices.values())


def _executable(engine: str) -> str:
    if engine not in ENGINES:
        raise DataError(f"unknown synthesis engine {engine!r} ({', '.join(ENGINES)})")
    exe = shutil.which(engine)
    if exe is None:
        raise DataError(f"synthetic voices need {engine} (Debian: apt-get install {engine})")
    return exe


def _command(
    exe: str, voice: Voice, word: str, take: int, rng: random.Random, out: str
) -> list[str]:
    if voice.engine == "flite":
        f0 = max(50, voice.pitch + rng.randint(-12, 12))
        stretch = (voice.speed + (rng.randint(-8, 8) if take else 0)) / 100
        return [
            exe, "-voice", voice.variant, "-t", word, "-o", out,
            "--setf", f"int_f0_target_mean={f0}", "--setf", f"duration_stretch={stretch:.2f}",
        ]  # fmt: skip
    pitch = min(99, max(0, voice.pitch + rng.randint(-8, 8)))
    speed = voice.speed + rng.randint(-15, 15) if take else voice.speed
    return [
        exe, "-v", f"{voice.accent}+{voice.variant}", "-p", str(pitch), "-s", str(speed),
        "-w", out, word,
    ]  # fmt: skip


def _say(exe: str, voice: Voice, word: str, take: int, rng: random.Random) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as out:
        command = _command(exe, voice, word, take, rng, out.name)
        subprocess.run(command, check=True, capture_output=True, timeout=30)
        wave, rate = decode(out.name)
    return trim_silence(resample(wave, rate, SAMPLE_RATE))


def trim_silence(wave: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing samples quieter than threshold_db below the peak."""
    start, end = loud_span(wave, threshold_db)
    return wave[start:end]


def generate(
    out_dir: Path,
    words: list[str],
    n_voices: int,
    takes: int,
    seed: int,
    spoken: dict[str, str] | None = None,
    engine: str = "espeak-ng",
) -> list[Sample]:
    """Write n_voices x takes recordings of every word; reuse them when already there."""
    exe = _executable(engine)
    voices = pick_voices(n_voices, seed, engine)
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
        return list(
            tqdm(pool.map(make, jobs), total=len(jobs), desc=f"synthesize ({engine})", unit="clip")
        )
