"""Unseen-speaker accuracy under noise, gain, a telephone line and reverberation.

Leave-one-speaker-out folds (`kws.cv.speaker_folds`, the folds of `kws cv`): each fold's
model is trained once, then its held-out speaker's clips are scored clean and under every
corruption of `kws.corruption` (seeded, so every run and every configuration sees the
same corrupted clips):

- white and pink noise at 20, 10 and 5 dB SNR (relative to the spoken span's RMS);
- gain of +12 dB (saturating at 16-bit full scale) and -12 dB;
- a telephone line: 300-3400 Hz band-pass, resampled to 8 kHz and back;
- reverberation: a synthetic room impulse response (direct path, then exponentially
  decaying Gaussian noise with RT60 0.3 s and 0.6 s, tail energy equal to the direct path's).

Last row: the clean clips through the TFLite graph `kws export` ships (export.quantization),
so the float and quantised accuracy come from the same fold models.

Usage (from the repo root):
  python benchmarks/robustness.py --source /path/to/fsdd [--set key=value ...]
      [--overlay FILE] [--name NAME] [--compare NAME] [--speaker S ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, add_params_arguments, load_average, params_config, params_of, record

from kws.corruption import (
    add_noise,
    apply_gain,
    coloured_noise,
    reverberate,
    room_impulse_response,
    telephone,
)
from kws.cv import speaker_folds
from kws.data.features import FeatureSet, clips_of
from kws.evaluate import fit_and_score
from kws.export import representative_rows, to_tflite
from kws.features import log_mel_batch
from kws.inference import Predictor
from kws.params import Params, PathParams

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]
RT60S = (0.3, 0.6)


def conditions(sample_rate: int) -> dict[str, Corruption]:
    """Every condition the benchmark scores, by name (clean first)."""
    out: dict[str, Corruption] = {"clean": lambda clip, rng: clip}
    for colour in ("white", "pink"):
        for snr in (20, 10, 5):
            out[f"{colour} noise {snr} dB"] = _noise(colour, snr)
    out["gain +12 dB"] = lambda clip, rng: apply_gain(clip, 12.0)
    out["gain -12 dB"] = lambda clip, rng: apply_gain(clip, -12.0)
    out["telephone 300-3400 Hz, 8 kHz"] = lambda clip, rng: telephone(clip, sample_rate)
    for rt60 in RT60S:
        out[f"reverb RT60 {rt60} s"] = _reverb(rt60, sample_rate)
    return out


def _noise(colour: str, snr_db: float) -> Corruption:
    return lambda clip, rng: add_noise(clip, coloured_noise(clip.shape[0], colour, rng), snr_db)


def _reverb(rt60: float, sample_rate: int) -> Corruption:
    return lambda clip, rng: reverberate(clip, room_impulse_response(rt60, sample_rate, rng))


def corrupted_accuracy(
    model, clips: np.ndarray, y: np.ndarray, params: Params, corrupt: Corruption, seed: int
) -> tuple[float, float]:
    """Accuracy of a Keras model on the clips under one corruption; and the share of
    clips it saturated (|sample| at full scale)."""
    rng = np.random.default_rng(seed)
    waves = np.stack([corrupt(clip, rng) for clip in clips])
    feats = log_mel_batch(waves, params.features)
    predicted = np.asarray(model.predict(feats[..., np.newaxis], verbose=0)).argmax(axis=1)
    saturated = float(np.mean(np.abs(waves).max(axis=1) >= 1.0))
    return float(np.mean(predicted == y)), saturated


def exported_accuracy(
    model, fold: FeatureSet, y: np.ndarray, labels: list[str], params: Params
) -> float:
    """Clean accuracy of the model as `kws export` ships it (export.quantization, TFLite)."""
    x_train, _ = fold.split("train")
    x_test, _ = fold.split("test")
    calibration = representative_rows(x_train, params.export.representative_clips, params.seed)
    graph = to_tflite(model, params.export.quantization, calibration)
    predictor = Predictor(graph, labels, params.features, num_threads=1)
    return float(np.mean(predictor.probabilities(x_test).argmax(axis=1) == y))


def run(params: Params, speakers: list[str]) -> dict[str, object]:
    """Train every fold once; score its held-out speaker under every condition."""
    folds = speaker_folds(params)
    cache = Path(params.paths.cache)
    named = conditions(params.features.sample_rate)
    accuracy: dict[str, dict[str, float]] = {name: {} for name in named}
    saturated: dict[str, float] = {}
    train_seconds: dict[str, float] = {}
    for speaker in speakers or folds.speakers:
        fold = folds.fold(speaker)
        fitted = fit_and_score(fold, folds.labels, params, cache_dir=cache / "clips")
        train_seconds[speaker] = round(fitted.result.seconds, 1)
        test = fold.splits == "test"
        clips = clips_of(list(fold.paths[test]), params.features, cache / "clips")
        index = {label: i for i, label in enumerate(folds.labels)}
        y = np.array([index[label] for label in fold.labels[test]])
        for number, (name, corrupt) in enumerate(named.items()):
            acc, sat = corrupted_accuracy(
                fitted.result.model, clips, y, params, corrupt, params.seed * 1000 + number
            )
            accuracy[name][speaker] = round(acc, 4)
            saturated[name] = max(saturated.get(name, 0.0), round(sat, 4))
        exported = f"clean, TFLite {params.export.quantization}"
        accuracy.setdefault(exported, {})[speaker] = round(
            exported_accuracy(fitted.result.model, fold, y, folds.labels, params), 4
        )
        print(
            f"{speaker}: clean {accuracy['clean'][speaker]:.4f}, "
            f"{exported} {accuracy[exported][speaker]:.4f}",
            flush=True,
        )
    summary = {
        name: {
            "mean": round(float(np.mean(list(by_speaker.values()))), 4),
            "min": round(float(np.min(list(by_speaker.values()))), 4),
        }
        for name, by_speaker in accuracy.items()
    }
    return {
        "conditions": summary,
        "accuracy": accuracy,
        "saturated_share_max": saturated,
        "train_seconds": train_seconds,
    }


def table(result: dict[str, object], before: dict[str, object] | None) -> str:
    """Markdown: one row per condition, mean and min over speakers, then each speaker."""
    accuracy: dict[str, dict[str, float]] = result["accuracy"]  # type: ignore[assignment]
    summary: dict[str, dict[str, float]] = result["conditions"]  # type: ignore[assignment]
    speakers = list(accuracy["clean"])
    extra = " | mean before | Δ mean" if before else ""
    head = f"| condition | mean | min{extra} | " + " | ".join(speakers) + " |"
    rule = "|---" * (3 + len(speakers) + (2 if before else 0)) + "|"
    rows = [head, rule]
    for name, by_speaker in accuracy.items():
        cells = [name, f"{summary[name]['mean']:.4f}", f"{summary[name]['min']:.4f}"]
        if before:
            earlier = before["conditions"].get(name)  # type: ignore[attr-defined]
            old = earlier["mean"] if earlier else None
            cells += (
                [f"{old:.4f}", f"{summary[name]['mean'] - old:+.4f}"]
                if old is not None
                else ["", ""]
            )
        cells += [f"{by_speaker[s]:.4f}" for s in speakers]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_params_arguments(parser, source=True)
    parser.add_argument("--name", default="robustness")
    parser.add_argument("--compare", help="an earlier result of this benchmark (its --name)")
    args = parser.parse_args()
    start_load = load_average()
    params = params_of(args)
    before = json.loads((RESULTS / f"{args.compare}.json").read_text()) if args.compare else None
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: str(Path(tmp) / v) for k, v in PathParams().__dict__.items()}
        # the data and the feature and clip caches persist between runs (cached features
        # name their files, so the raw folder must stay where it was)
        paths["cache"] = str(Path(PathParams().cache).resolve())
        paths["raw"] = str(Path(PathParams().cache, "benchmark-data").resolve())
        params = params.replace(paths=PathParams(**paths), registry={"register": False})
        result = run(params, args.speaker)
    figures = {
        "load_average_at_start": start_load,
        "config": params_config(args),
        "params_hash": params.digest(),
        "compared_with": args.compare,
        **result,
    }
    markdown = (
        "Accuracy on each held-out speaker (leave-one-speaker-out, one model per fold, "
        "trained once) under each corruption; mean and min over speakers.\n\n"
        + table(result, before)
        + f"\n\n```json\n{json.dumps(figures, indent=2)}\n```"
    )
    record(args.name, figures, markdown)
    print(table(result, before))
    print(f"results in {RESULTS / (args.name + '.md')}")


if __name__ == "__main__":
    main()
