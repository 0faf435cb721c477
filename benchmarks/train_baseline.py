"""Baseline on the whole FSDD mirror: wall time, feature throughput, held-out-speaker accuracy.

Usage: KWS_FSDD_SOURCE=/path/to/fsdd python benchmarks/train_baseline.py
       --overlay pipelines/configs/params/baseline.yaml
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import record

from kws.data import fetch, prepare
from kws.data.features import featurize_samples
from kws.evaluate import fit_and_score
from kws.params import PathParams, resolve_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--overlay", type=Path, action="append", default=[])
    parser.add_argument("--name", default="train_baseline")
    args = parser.parse_args()
    params = resolve_params(args.params, None, args.overlay)
    with tempfile.TemporaryDirectory() as tmp:
        paths = PathParams(**{k: str(Path(tmp) / v) for k, v in PathParams().__dict__.items()})
        params = params.replace(paths=paths)
        start = time.perf_counter()
        fetch(params)
        samples, info = prepare(params)
        t_data = time.perf_counter() - start
        t0 = time.perf_counter()
        features = featurize_samples(samples, params.features)  # no cache: measure extraction
        t_features = time.perf_counter() - t0
        fitted = fit_and_score(features, info["labels"], params, cache_dir=Path(tmp) / "clips")
        result, metrics = fitted.result, fitted.metrics
        total = time.perf_counter() - start
    figures = {
        "config": {
            "architecture": params.model.architecture,
            "epochs": params.train.epochs,
            "n_mels": params.features.n_mels,
            "params_hash": params.digest(),
        },
        "speakers": info["speakers"],
        "n_files": len(samples),
        "wall_seconds_total": round(total, 1),
        "data_seconds": round(t_data, 1),
        "feature_seconds": round(t_features, 1),
        "feature_files_per_second": round(len(samples) / t_features, 1),
        "train_seconds": round(result.seconds, 1),
        "epochs_run": len(result.history["loss"]),
        "best_epoch": result.best_epoch,
        "model_parameters": int(result.model.count_params()),
        "heldout_speaker": info["speakers"]["test"],
        "heldout_accuracy": round(metrics["accuracy"], 4),
        "heldout_macro_f1": round(metrics["macro_f1"], 4),
        "val_accuracy_best": round(max(result.history["val_accuracy"]), 4),
    }
    table = "\n".join(f"| {k} | {v} |" for k, v in figures.items())
    record(args.name, figures, f"| figure | value |\n|---|---|\n{table}")
    print(table)


if __name__ == "__main__":
    main()
