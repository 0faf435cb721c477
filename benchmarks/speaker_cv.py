"""Unseen-speaker accuracy of a configuration, plus its training time, size and latency.

1. Leave-one-speaker-out CV over the FSDD mirror (`kws.evaluate.cross_validate`).
2. Full training of the same configuration on the default split (train/val/test speakers),
   timed, exported to TFLite: parameters, file size, latency per clip at batch 1 (and
   the numpy log-mel front end's).

Usage (from the repo root):
  KWS_FSDD_SOURCE=/path/to/fsdd python benchmarks/speaker_cv.py [--overlay FILE]
      [--set key=value ...] [--name NAME] [--speaker S ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, add_params_arguments, params_config, params_of, record

from kws.cv import cross_validate
from kws.data import fetch, prepare
from kws.data.features import featurize_samples
from kws.evaluate import describe_confusions, fit_and_score
from kws.export import export_package, representative_rows
from kws.features import features_of_waveform
from kws.inference import Predictor
from kws.params import Params, PathParams


def _timed_ms(call: Callable[[], object], runs: int) -> dict[str, float]:
    """Median and p99 wall time of call, in ms, after a warm-up."""
    for _ in range(20):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {
        "median": round(float(np.median(times)), 3),
        "p99": round(float(np.percentile(times, 99)), 3),
    }


def tflite_latency_ms(package: Path, runs: int = 500) -> dict[str, float]:
    """One TFLite invoke on one clip's features (features.clip_seconds), batch 1, 2 threads."""
    predictor = Predictor.from_path(package, num_threads=2)
    features = (
        np.random.default_rng(0)
        .standard_normal((1, predictor.features.n_frames, predictor.features.n_mels))
        .astype(np.float32)
    )
    return _timed_ms(lambda: predictor.probabilities(features), runs)


def front_end_latency_ms(package: Path, runs: int = 500) -> dict[str, float]:
    """The features of a 1 s, 16 kHz waveform (padding, log-mels), one core of numpy."""
    predictor = Predictor.from_path(package)
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    return _timed_ms(lambda: features_of_waveform(wave, 16000, predictor.features), runs)


def full_training(params: Params, tmp: Path) -> dict[str, Any]:
    """Train on the default split from scratch (features included), export, measure."""
    start = time.perf_counter()
    fetch(params)
    samples, info = prepare(params)
    features = featurize_samples(samples, params.features)
    fitted = fit_and_score(features, info["labels"], params, cache_dir=tmp / "clips")
    wall = time.perf_counter() - start
    result, metrics = fitted.result, fitted.metrics
    x_train, _ = features.split("train")
    calibration = representative_rows(x_train, params.export.representative_clips, params.seed)
    package = export_package(
        result.model,
        info["labels"],
        params.features,
        {},
        tmp / "package",
        params.export.quantization,
        calibration,
    )
    return {
        "full_train_wall_seconds": round(wall, 1),
        "fit_seconds": round(result.seconds, 1),
        "heldout_speaker": info["speakers"]["test"],
        "heldout_accuracy": round(metrics["accuracy"], 4),
        "parameters": int(result.model.count_params()),
        "tflite_bytes": (package / "model.tflite").stat().st_size,
        "tflite_latency_ms": tflite_latency_ms(package),
        "front_end_latency_ms": front_end_latency_ms(package),
        "clip_seconds": params.features.clip_seconds,
        "quantization": params.export.quantization,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_params_arguments(parser)
    parser.add_argument("--name", default="speaker_cv")
    parser.add_argument("--skip-full", action="store_true", help="only the CV")
    args = parser.parse_args()
    params = params_of(args)
    with tempfile.TemporaryDirectory() as tmp:
        paths = PathParams(**{k: str(Path(tmp) / v) for k, v in PathParams().__dict__.items()})
        params = params.replace(paths=paths, registry={"register": False})
        cv = cross_validate(params, args.speaker or None)
        full = {} if args.skip_full else full_training(params, Path(tmp))
    figures = {
        "config": {
            **params_config(args),
            "params_hash": params.digest(),
        },
        **cv,
        **full,
    }
    limits = ""
    if full:
        latency = full["tflite_latency_ms"]["median"]
        limits = (
            f"\n\nLimits: parameters {full['parameters']:,} (≤ 500,000), TFLite "
            f"{full['tflite_bytes'] / 1e6:.2f} MB (≤ 2 MB), TFLite latency {latency} ms "
            f"median per {full['clip_seconds']} s clip (≤ 2 ms; log-mel front end "
            f"{full['front_end_latency_ms']['median']} ms more), full training "
            f"{full['full_train_wall_seconds']} s (≤ 300 s)."
        )
    rows = "\n".join(
        f"| {s} | {f['accuracy']:.4f} | {f['macro_f1']:.4f} | {f['train_seconds']} | "
        f"{describe_confusions(f['top_confusions'])} |"
        for s, f in cv["folds"].items()
    )
    table = (
        "| held-out speaker | accuracy | macro-F1 | train s | most confused (true->predicted "
        f"clips) |\n|---|---|---|---|---|\n{rows}\n"
        f"| **mean** | **{cv['mean_accuracy']:.4f}** | **{cv['mean_macro_f1']:.4f}** | | |"
        f"\n\nMinimum over speakers: {cv['min_accuracy']:.4f}.{limits}\n\n"
        f"```json\n{json.dumps(figures, indent=2)}\n```"
    )
    record(args.name, figures, table)
    print(table)
    print(f"results in {RESULTS / (args.name + '.md')}")


if __name__ == "__main__":
    main()
