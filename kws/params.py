"""Typed view of params.yaml: unknown keys and wrong types are clear errors.

params.yaml is the one source of the parameters a run uses; the dataclass defaults below
only mirror it (tests/unit/test_params.py proves they are equal), so code that builds a
section without a file gets what the project ships.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kws.errors import ParamsError

DEFAULT_PARAMS_FILE = Path("params.yaml")


@dataclass(frozen=True)
class DataParams:
    """Where the data comes from and how it is split."""

    source: str = "fsdd"
    fsdd_source: str | None = None
    speech_commands_source: str | None = None
    folder: str | None = None
    max_per_class: int = 0
    val_percent: float = 20.0
    test_percent: float = 20.0
    val_speakers: list[str] = field(default_factory=list)
    test_speakers: list[str] = field(default_factory=list)
    silence_percent: float = 10.0
    unknown_percent: float = 10.0
    synthetic_voices: int = 0  # espeak-ng speakers added to the train split
    synthetic_takes: int = 1
    synthetic_flite_voices: int = 0  # flite speakers (awb, rms, slt, kal16 at varied f0/rate)


@dataclass(frozen=True)
class FeatureParams:
    """Log-mel parameters: exactly what training and serving both compute."""

    sample_rate: int = 16000
    clip_seconds: float = 1.5
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 32
    fmin: float = 60.0
    fmax: float = 3800.0
    normalize: str = "none"  # none | utterance (mean/std) | tilt | cmvn (per mel bin)
    log_floor: float = 1e-6  # added to mel power before the log
    lifter: int = 0  # >0: keep this many cepstral coefficients (smooths out pitch harmonics)
    trim_db: float = 0.0  # >0: cut edge frames quieter than this many dB below the loudest
    frames: int = 0  # >0: stretch the (trimmed) spectrogram to this many frames
    center: bool = False  # frames centred on their hop (librosa) or starting at sample 0
    scale: str = "db"  # ln: log(mel + log_floor) | db: 10 log10, floored top_db below the peak
    top_db: float = 80.0

    @property
    def clip_samples(self) -> int:
        """Samples in one clip."""
        return round(self.sample_rate * self.clip_seconds)

    @property
    def n_frames(self) -> int:
        """Frames of one clip's features (librosa centres frames)."""
        if self.frames > 0:
            return self.frames
        if self.center:
            return 1 + self.clip_samples // self.hop_length
        return 1 + (self.clip_samples - self.n_fft) // self.hop_length


@dataclass(frozen=True)
class AugmentParams:
    """Training-time augmentation (train split only); zeros switch a transform off."""

    enabled: bool = True
    time_shift_ms: float = 100.0
    speed: float = 0.0  # +- fraction
    gain_db: float = 6.0  # +- dB
    tilt_db: float = 0.0  # +- dB of spectral tilt at 4 kHz (microphone colouring)
    edge_cut: float = 0.0  # cut up to this fraction of the word at each end (tight VAD)
    edge_cut_prob: float = 0.5  # probability that a clip gets its edges cut
    noise_prob: float = 0.5
    snr_db_min: float = 5.0
    snr_db_max: float = 25.0
    reverb_prob: float = 0.25  # probability of a synthetic room (kws.corruption)
    rt60_min: float = 0.1  # seconds
    rt60_max: float = 0.8
    telephone_prob: float = 0.1  # probability of a 300-3400 Hz, 8 kHz phone line
    freq_warp: float = 0.0  # +- fraction of the mel axis
    freq_masks: int = 0
    freq_mask_width: int = 5
    time_masks: int = 0
    time_mask_width: int = 5


@dataclass(frozen=True)
class ModelParams:
    """Architecture choice and its knobs."""

    architecture: str = "speech_embedding"
    dropout: float = 0.1
    width: int = 128
    fine_tune: int = 0  # speech_embedding: train its last this-many convolutions too
    pooling: str = "attention"  # speech_embedding: mean_max | attention (learned weights)
    # speech_embedding: a stack file (benchmarks/narrow_stack.py --save-stack) instead of
    # the pretrained stack, e.g. a narrower distilled copy; None: the pretrained one
    embedding_stack: str | None = None


@dataclass(frozen=True)
class TrainParams:
    """Optimisation settings."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.003
    early_stopping_patience: int = 10
    lr_schedule: str = "cosine"  # constant | cosine
    label_smoothing: float = 0.1
    mixup: float = 0.0  # >0: mix pairs of augmented examples, weight ~ Beta(mixup, mixup)
    # >0: model.fine_tune's convolutions stay frozen for the `epochs` above, then train
    # (with the head) for this many more epochs at learning_rate * fine_tune_lr_scale
    fine_tune_epochs: int = 0
    fine_tune_lr_scale: float = 0.1


@dataclass(frozen=True)
class ExportParams:
    """How `kws export` converts the trained model to TFLite."""

    quantization: str = "dynamic_int8"  # none (float32) | float16 | dynamic_int8 | int8
    representative_clips: int = 200  # int8: train-split clips that calibrate activation ranges


@dataclass(frozen=True)
class RegistryParams:
    """MLflow experiment, registered model and promotion gate."""

    experiment: str = "kws"
    model_name: str = "kws"
    register: bool = True  # kws export registers a version (alias challenger)
    gate_margin: float = 0.01  # accuracy the challenger must gain to replace the champion


@dataclass(frozen=True)
class PathParams:
    """Where each stage writes (relative to the project folder)."""

    raw: str = "data/raw"
    prepared: str = "data/prepared"
    features: str = "data/features"
    model: str = "models/train"
    package: str = "models/package"
    reports: str = "reports"
    cache: str = ".cache/kws"


@dataclass(frozen=True)
class Params:
    """All parameters of a run."""

    seed: int = 42
    data: DataParams = field(default_factory=DataParams)
    features: FeatureParams = field(default_factory=FeatureParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    export: ExportParams = field(default_factory=ExportParams)
    registry: RegistryParams = field(default_factory=RegistryParams)
    paths: PathParams = field(default_factory=PathParams)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (YAML/JSON friendly)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys, as MLflow params and `dvc params diff` show them."""
        return flatten(self.to_dict())

    def digest(self) -> str:
        """Short stable hash of the parameters."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def replace(self, **sections: Any) -> Params:
        """Copy with whole sections or `section={key: value}` overrides."""
        updates: dict[str, Any] = {}
        for name, value in sections.items():
            current = getattr(self, name)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                updates[name] = dataclasses.replace(current, **value)  # type: ignore[type-var]
            else:
                updates[name] = value
        return dataclasses.replace(self, **updates)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def read_yaml_mapping(path: Path, what: str = "params file") -> dict[str, Any]:
    """A YAML file holding a mapping, or a one-line ParamsError."""
    if not path.is_file():
        raise ParamsError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping at the top level")
    return data


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate a params file."""
    return params_from_dict(read_yaml_mapping(Path(path)), source=str(path))


def resolve_params(
    path: Path, overrides: list[str] | None, overlays: list[Path] | None = None
) -> Params:
    """Load params, merge overlay files (partial params YAML), then `key=value` overrides."""
    params = load_params(path)
    if not overrides and not overlays:
        return params
    tree: dict[str, Any] = params.to_dict()
    for overlay in overlays or []:
        _merge(tree, read_yaml_mapping(overlay, "overlay"), str(overlay))
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ParamsError(f"--set expects key=value, got {item!r}")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ParamsError(f"--set: unknown parameter {key!r}")
            node = node[part]
        if leaf not in node:
            raise ParamsError(f"--set: unknown parameter {key!r}")
        node[leaf] = yaml.safe_load(raw)
    return params_from_dict(tree, source="params (with --set)")


def _merge(tree: dict[str, Any], overlay: dict[str, Any], where: str) -> None:
    for key, value in overlay.items():
        if key not in tree:
            raise ParamsError(f"{where}: unknown parameter {key!r}")
        if isinstance(value, dict) and isinstance(tree[key], dict):
            _merge(tree[key], value, f"{where}:{key}")
        else:
            tree[key] = value


def params_from_dict(raw: dict[str, Any], source: str = "params") -> Params:
    """Build Params from a nested dict, rejecting unknown keys and bad types."""
    return typing.cast(Params, _build(Params, raw, source))


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {', '.join(unknown)}")
    values = {}
    for key, value in raw.items():
        values[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{where}: expected a list")
        return [str(v) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true/false")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ParamsError(f"{where}: expected a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    return value
