"""The TFLite graph, cheaper: quantisation and clip length against latency, size and accuracy.

For each clip length (fewer frames = fewer speech-embedding windows), the leave-one-speaker-
out folds of `kws cv` are trained once (the float Keras model), and each fold's model is
converted four ways (`kws.export.QUANTIZATIONS`): float32, float16 weights, dynamic-range
int8 and full-integer int8 calibrated on that fold's train split. Every variant is scored on
the fold's held-out speaker through the TFLite runtime the server uses (`kws.inference`).
Latency: one thread, batch 1, the first fold's graphs, variants interleaved over rounds so
a change of load hits them alike; median and p99 of every invoke.

Usage (from the repo root):
  python benchmarks/graph_variants.py --source /path/to/fsdd [--clip-seconds 1.5 1.0]
      [--set key=value ...] [--name NAME] [--speaker S ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    INVOKES_PER_ROUND,
    RESULTS,
    ROUNDS,
    add_params_arguments,
    interleaved_ms,
    load_average,
    params_config,
    params_of,
    record,
)

from kws.cv import speaker_folds
from kws.evaluate import fit_and_score
from kws.export import QUANTIZATIONS, representative_rows, to_tflite
from kws.inference import Predictor
from kws.params import Params, PathParams
from kws.pretrained import embedding_frames


def latencies_ms(graphs: dict[str, Predictor], n_frames: int, n_mels: int) -> dict[str, dict]:
    """Median and p99 ms per invoke of each predictor, one thread, interleaved rounds."""
    features = np.random.default_rng(0).standard_normal((1, n_frames, n_mels)).astype(np.float32)
    return interleaved_ms(
        {name: partial(predictor.probabilities, features) for name, predictor in graphs.items()}
    )


def clip_length(params: Params, speakers: list[str]) -> dict[str, object]:
    """Train the folds at params' clip length; accuracy, size and latency of every variant."""
    folds = speaker_folds(params)
    cache = Path(params.paths.cache)
    index = {label: i for i, label in enumerate(folds.labels)}
    accuracy: dict[str, dict[str, float]] = {q: {} for q in ("keras", *QUANTIZATIONS)}
    sizes: dict[str, int] = {}
    timed: dict[str, Predictor] = {}
    for speaker in speakers or folds.speakers:
        fold = folds.fold(speaker)
        fitted = fit_and_score(fold, folds.labels, params, cache_dir=cache / "clips")
        accuracy["keras"][speaker] = round(fitted.metrics["accuracy"], 4)
        x_train, _ = fold.split("train")
        x_test, labels = fold.split("test")
        y = np.array([index[label] for label in labels])
        calibration = representative_rows(x_train, params.export.representative_clips, params.seed)
        for quantization in QUANTIZATIONS:
            graph = to_tflite(fitted.result.model, quantization, calibration)
            predictor = Predictor(graph, folds.labels, params.features, num_threads=1)
            predicted = predictor.probabilities(x_test).argmax(axis=1)
            accuracy[quantization][speaker] = round(float(np.mean(predicted == y)), 4)
            if quantization not in timed:  # the first fold's graphs
                timed[quantization], sizes[quantization] = predictor, len(graph)
        print(f"{params.features.clip_seconds} s, {speaker}: {accuracy}", flush=True)
    fp = params.features
    return {
        "clip_seconds": fp.clip_seconds,
        "frames": fp.n_frames,
        "embedding_windows": embedding_frames(fp.n_frames),
        "accuracy": accuracy,
        "mean_accuracy": {
            q: round(float(np.mean(list(a.values()))), 4) for q, a in accuracy.items()
        },
        "min_accuracy": {q: round(float(np.min(list(a.values()))), 4) for q, a in accuracy.items()},
        "tflite_bytes": sizes,
        "latency_ms_one_thread": latencies_ms(timed, fp.n_frames, fp.n_mels),
    }


def table(results: list[dict]) -> str:
    """Markdown: one row per clip length and variant."""
    rows = [
        "| clip s | windows | variant | LOSO mean | LOSO min | Δ mean vs float32 | "
        "file MB | median ms (1 thread) | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mean, low = r["mean_accuracy"], r["min_accuracy"]
        rows.append(
            f"| {r['clip_seconds']} | {r['embedding_windows']} | keras (float32, reference) | "
            f"{mean['keras']:.4f} | {low['keras']:.4f} | | | | |"
        )
        for q in QUANTIZATIONS:
            lat = r["latency_ms_one_thread"][q]
            rows.append(
                f"| {r['clip_seconds']} | {r['embedding_windows']} | {q} | {mean[q]:.4f} | "
                f"{low[q]:.4f} | {mean[q] - mean['none']:+.4f} | "
                f"{r['tflite_bytes'][q] / 1e6:.3f} | {lat['median']} | {lat['p99']} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_params_arguments(parser, source=True)
    parser.add_argument("--clip-seconds", type=float, nargs="+", default=[1.5, 1.0])
    parser.add_argument("--name", default="graph_variants")
    args = parser.parse_args()
    start_load = load_average()
    params = params_of(args)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: str(Path(tmp) / v) for k, v in PathParams().__dict__.items()}
        # the data and the feature and clip caches persist between runs (cached features
        # name their files, so the raw folder must stay where it was)
        paths["cache"] = str(Path(PathParams().cache).resolve())
        paths["raw"] = str(Path(PathParams().cache, "benchmark-data").resolve())
        params = params.replace(paths=PathParams(**paths), registry={"register": False})
        for seconds in args.clip_seconds:
            results.append(
                clip_length(params.replace(features={"clip_seconds": seconds}), args.speaker)
            )
    figures = {
        "load_average_at_start": start_load,
        "config": params_config(args),
        "params_hash": params.digest(),
        "results": results,
    }
    markdown = (
        "Accuracy: leave-one-speaker-out (mean and min over the held-out speakers) of each "
        "TFLite variant of the same fold models; keras is the float model before conversion. "
        "File size and latency: the first fold's graphs, batch 1, one thread, "
        f"{ROUNDS} interleaved rounds of {INVOKES_PER_ROUND} invokes (the log-mel front end "
        "not included).\n\n" + table(results) + f"\n\n```json\n{json.dumps(figures, indent=2)}\n```"
    )
    record(args.name, figures, markdown)
    print(table(results))
    print(f"results in {RESULTS / (args.name + '.md')}")


if __name__ == "__main__":
    main()
