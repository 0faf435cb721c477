"""Test helpers: synthetic WAVs and small project folders."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile as sf
import yaml

from kws.errors import KwsError
from kws.params import FeatureParams

REPO = Path(__file__).resolve().parents[1]
FSDD_ENV = "KWS_FSDD_SOURCE"  # the variable `kws data fetch` reads too


def local_fsdd() -> Path:
    """The FSDD copy tests use (a folder with recordings/): the one $KWS_FSDD_SOURCE names,
    else the real release downloaded once (verified) into ~/.cache/kws/fsdd."""
    source = os.environ.get(FSDD_ENV)
    if not source:
        from kws.data import fsdd  # the real download path, as `kws data fetch` takes it

        try:
            return fsdd.fetch(Path.home() / ".cache" / "kws" / "fsdd").parent
        except KwsError as exc:
            raise LookupError(
                f"{exc} (offline: set {FSDD_ENV} to a local FSDD copy with recordings/)"
            ) from exc
    folder = Path(source).expanduser().resolve()
    if folder.name == "recordings":
        folder = folder.parent
    if not (folder / "recordings").is_dir():
        raise LookupError(f"{FSDD_ENV}={source}: no recordings/ folder there (tests need one)")
    return folder


def tone(
    seconds: float = 0.5, rate: int = 16000, freq: float = 440.0, channels: int = 1
) -> np.ndarray:
    """A sine tone, shape (samples,) or (samples, channels)."""
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def wav_bytes(wave: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    """Encode a waveform as WAV bytes with the given sample format."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def write_params(project: Path, **sections: dict) -> Path:
    """Write params.yaml in a project folder: the repo's params with section overrides."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, values in sections.items():
        if isinstance(values, dict):
            params[name].update(values)
        else:
            params[name] = values
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# The from-scratch models' front end (pipelines/configs/params/ds_cnn.yaml): 1 s clips,
# 40 centred mels of 20-4000 Hz on a natural-log scale. The default (params.yaml) is the
# speech embedding's dB front end; tests of ln-scale behaviour name this one.
LN_FRONT_END = FeatureParams(
    clip_seconds=1.0, n_mels=40, fmin=20.0, fmax=4000.0, center=True, scale="ln"
)


def load_script(relative: str, name: str) -> ModuleType:
    """Import a script of the repository that is not in a package (docs/, benchmarks/)."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module
