"""Distil the shipped speech-embedding model (teacher) into the small DS-CNN (student) and
measure the student's leave-one-speaker-out accuracy against the teacher's.

Per held-out speaker:
1. The teacher: the configuration of --params (the shipped default) trained on the other
   speakers' clips exactly as `kws.cv` does (`fit_and_score` on the fold).
2. A pool of the student's training clips (the other real speakers plus the overlay's
   synthetic voices): each clip clean plus --copies augmented copies (the overlay's waveform
   augmentation: time shift, speed, gain, noise), each copy featurized twice, once with the
   teacher's front end (for its soft labels at --temperature) and once with the student's.
3. The student: the overlay's model (built by `kws.model.build_model`) trained for the
   overlay's epochs on the KD loss, alpha * T^2 * KL(teacher_T || student_T) +
   (1 - alpha) * cross-entropy(hard labels, label-smoothed as the overlay says); every epoch
   draws one copy per clip from the pool and applies the overlay's spectrogram augmentation.
   With --control, the same student is also trained on the hard labels alone (alpha 0, same
   pool and schedule): the from-scratch baseline on identical data.
4. Teacher and students exported to TFLite (export.quantization of --params) and scored on
   the held-out speaker with one interpreter thread; median latency, one thread, batch 1.

Usage (from the repo root):
  KWS_FSDD_SOURCE=/path/to/fsdd python benchmarks/distill_student.py [--speaker S ...]
      [--temperature 3] [--alpha 0.7] [--copies 4] [--control] [--name NAME]
      [--teacher-set key=value ...] [--student-set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, interleaved_ms, load_average, record

from kws.augment import Augmenter
from kws.cv import SpeakerFolds, speaker_folds
from kws.data.features import clips_of
from kws.evaluate import fit_and_score, score, score_tflite
from kws.export import representative_rows, to_tflite
from kws.features import log_mel_batch
from kws.inference import Predictor
from kws.model import build_model
from kws.params import Params, PathParams, resolve_params
from kws.train import encode, learning_rate_schedule, set_seed

STUDENT_OVERLAY = Path("pipelines/configs/params/ds_cnn.yaml")
EPS = 1e-12


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from softmax(logits): log p differs from the logits by a constant."""
    scaled = np.log(np.maximum(probabilities, EPS)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    e = np.exp(scaled)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def kd_loss(n_classes: int, temperature: float, alpha: float, smoothing: float) -> Any:
    """Keras loss on y_true = [hard one-hot | teacher probabilities at T] and the student's
    softmax output (logits recovered as log p, exact up to a constant)."""
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        hard = y_true[:, :n_classes] * (1 - smoothing) + smoothing / n_classes
        soft = y_true[:, n_classes:]
        log_p = ops.log(ops.clip(y_pred, EPS, 1.0))
        cross_entropy = -ops.sum(hard * log_p, axis=-1)
        log_q = ops.log_softmax(log_p / temperature, axis=-1)
        kl = ops.sum(soft * (ops.log(ops.clip(soft, EPS, 1.0)) - log_q), axis=-1)
        return (1 - alpha) * cross_entropy + alpha * temperature**2 * kl

    return loss


def hard_accuracy(n_classes: int) -> Any:
    """Accuracy against the hard half of y_true."""
    from keras import ops

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        hits = ops.argmax(y_true[:, :n_classes], axis=-1) == ops.argmax(y_pred, axis=-1)
        return ops.mean(ops.cast(hits, "float32"))

    return accuracy


def build_pool(
    teacher: Any, paths: list[str], teacher_params: Params, student_params: Params, copies: int
) -> tuple[np.ndarray, np.ndarray]:
    """Student features (copies + 1, n, frames, mels) of every clip clean and augmented, and
    the teacher's probabilities (copies + 1, n, classes) on the same audio."""
    tfp, sfp = teacher_params.features, student_params.features
    clips = clips_of(paths, tfp, Path(teacher_params.paths.cache) / "clips")
    augmenter = Augmenter(student_params.augment, student_params.seed)
    # the student's shorter clip is the middle of the teacher's: clips are padded centred, so
    # for clips shorter than the student's the clean copy equals the student's own features
    crop = (tfp.clip_samples - sfp.clip_samples) // 2
    student_x, teacher_p = [], []
    for copy in range(copies + 1):
        waves = (
            clips
            if copy == 0
            else np.stack([augmenter.waveform(c, tfp.sample_rate) for c in clips])
        )
        teacher_x = log_mel_batch(waves, tfp)
        teacher_p.append(
            np.asarray(teacher.predict(teacher_x[..., np.newaxis], batch_size=256, verbose=0))
        )
        student_x.append(log_mel_batch(waves[:, crop : crop + sfp.clip_samples], sfp))
    return np.stack(student_x), np.stack(teacher_p)


def pool_batches(pool_x: np.ndarray, targets: np.ndarray, params: Params, batch_size: int) -> Any:
    """A Keras PyDataset: every epoch one pool copy per clip, spectrogram-augmented, shuffled."""
    import keras

    class PoolBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(params.seed + 2)
            self.augmenter = Augmenter(params.augment, params.seed + 3)
            self.n = pool_x.shape[1]
            self._make_epoch()

        def _make_epoch(self) -> None:
            copy = self.rng.integers(0, pool_x.shape[0], size=self.n)
            rows = np.arange(self.n)
            feats = [self.augmenter.spectrogram(f) for f in pool_x[copy, rows]]
            self.x = np.stack(feats)[..., np.newaxis]
            self.y = targets[copy, rows]
            self.order = self.rng.permutation(self.n)

        def __len__(self) -> int:
            return int(np.ceil(self.n / batch_size))

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rows = self.order[index * batch_size : (index + 1) * batch_size]
            return self.x[rows], self.y[rows]

        def on_epoch_end(self) -> None:
            self._make_epoch()

    return PoolBatches()


def train_student(
    pool_x: np.ndarray,
    teacher_p: np.ndarray,
    hard: np.ndarray,
    params: Params,
    temperature: float,
    alpha: float,
) -> tuple[Any, float]:
    """The student trained on the pool with the KD loss (alpha 0: hard labels only); seconds."""
    import keras

    set_seed(params.seed)
    t, n_classes = params.train, hard.shape[1]
    soft = soften(teacher_p.reshape(-1, n_classes), temperature).reshape(teacher_p.shape)
    targets = np.concatenate([np.broadcast_to(hard, soft.shape), soft], axis=-1)
    model = build_model(params.model, pool_x.shape[2:4], n_classes, pool_x[0])
    data = pool_batches(pool_x, targets, params, t.batch_size)
    schedule = learning_rate_schedule(t, len(data), t.learning_rate, t.epochs)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=kd_loss(n_classes, temperature, alpha, t.label_smoothing),
        metrics=[hard_accuracy(n_classes)],
    )
    start = time.perf_counter()
    model.fit(data, epochs=t.epochs, verbose=0)
    return model, time.perf_counter() - start


def scored_graph(model: Any, folds: SpeakerFolds, speaker: str, params: Params) -> dict[str, Any]:
    """Keras and TFLite (export.quantization, one thread) accuracy on the held-out speaker."""
    fold = folds.fold(speaker)
    x_train, _ = fold.split("train")
    calibration = representative_rows(x_train, params.export.representative_clips, params.seed)
    graph = to_tflite(model, params.export.quantization, calibration)
    return {
        "keras_accuracy": round(score(model, fold, folds.labels)["accuracy"], 4),
        "tflite_accuracy": round(
            score_tflite(graph, folds.labels, fold, params.features)["accuracy"], 4
        ),
        "tflite_bytes": len(graph),
        "parameters": int(model.count_params()),
        "graph": graph,
    }


def latencies(graphs: dict[str, tuple[bytes, Params]], labels: list[str]) -> dict[str, Any]:
    """Median and p99 ms of one invoke of each graph, one thread, batch 1, interleaved."""
    rng = np.random.default_rng(0)
    calls: dict[str, Callable[[], object]] = {}
    for name, (graph, params) in graphs.items():
        predictor = Predictor(graph, labels, params.features, num_threads=1)
        x = rng.standard_normal((1, params.features.n_frames, params.features.n_mels))
        calls[name] = partial(predictor.probabilities, x.astype(np.float32))
    return interleaved_ms(calls, rounds=5, per_round=100, warmup=50)


def run_speaker(
    speaker: str,
    teacher_folds: SpeakerFolds,
    student_folds: SpeakerFolds,
    teacher_params: Params,
    student_params: Params,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Teacher, pool, distilled (and control) student of one held-out speaker."""
    labels = teacher_folds.labels
    cache = Path(teacher_params.paths.cache)
    fitted = fit_and_score(
        teacher_folds.fold(speaker), labels, teacher_params, cache_dir=cache / "clips"
    )
    teacher = fitted.result.model
    row: dict[str, Any] = {"teacher": scored_graph(teacher, teacher_folds, speaker, teacher_params)}
    row["teacher"]["train_seconds"] = round(fitted.result.seconds, 1)
    student_fold = student_folds.fold(speaker)
    train_mask = student_fold.splits == "train"
    start = time.perf_counter()
    pool_x, teacher_p = build_pool(
        teacher,
        list(student_fold.paths[train_mask]),
        teacher_params,
        student_params,
        args.copies,
    )
    row["pool_seconds"] = round(time.perf_counter() - start, 1)
    hard = np.eye(len(labels), dtype=np.float32)[encode(student_fold.labels[train_mask], labels)]
    row["pool_clips"] = int(pool_x.shape[1])
    row["teacher_pool_agreement"] = round(
        float(np.mean(teacher_p.argmax(-1) == hard.argmax(-1)[np.newaxis])), 4
    )
    variants = {"distilled": args.alpha, **({"hard_only": 0.0} if args.control else {})}
    for name, alpha in variants.items():
        model, seconds = train_student(
            pool_x, teacher_p, hard, student_params, args.temperature, alpha
        )
        row[name] = scored_graph(model, student_folds, speaker, student_params)
        row[name]["train_seconds"] = round(seconds, 1)
    timed = latencies(
        {
            name: (row[name]["graph"], teacher_params if name == "teacher" else student_params)
            for name in ("teacher", *variants)
        },
        labels,
    )
    for name, ms in timed.items():
        row[name]["tflite_ms_1_thread"] = ms
        del row[name]["graph"]
    print(json.dumps({speaker: row}), flush=True)
    return row


def with_work_paths(params: Params, work: Path) -> Params:
    """params writing under work (data, caches), never registering."""
    paths = PathParams(**{k: str(work / v) for k, v in PathParams().__dict__.items()})
    return params.replace(paths=paths, registry={"register": False})


def markdown(figures: dict[str, Any], scratch: dict[str, float]) -> str:
    """The per-speaker table and the raw figures."""
    lines = [
        "| held-out speaker | teacher keras | teacher TFLite | student from scratch "
        "(speaker_cv_ds_cnn.md) | student hard-only, same pool (TFLite) | distilled student "
        "keras | distilled student TFLite | Δ distilled vs teacher (TFLite) | teacher ms | "
        "student ms | teacher train s | pool s | student train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for speaker, row in figures["speakers"].items():
        t, d = row["teacher"], row["distilled"]
        control = row.get("hard_only", {}).get("tflite_accuracy", "")
        lines.append(
            f"| {speaker} | {t['keras_accuracy']:.4f} | {t['tflite_accuracy']:.4f} | "
            f"{scratch.get(speaker, '')} | {control} | {d['keras_accuracy']:.4f} | "
            f"{d['tflite_accuracy']:.4f} | {d['tflite_accuracy'] - t['tflite_accuracy']:+.4f} | "
            f"{t['tflite_ms_1_thread']['median']} | {d['tflite_ms_1_thread']['median']} | "
            f"{t['train_seconds']} | {row['pool_seconds']} | {d['train_seconds']} |"
        )
    return "\n".join(lines) + f"\n\n```json\n{json.dumps(figures, indent=2)}\n```"


def from_scratch_accuracies() -> dict[str, float]:
    """The DS-CNN overlay's LOSO accuracies of speaker_cv_ds_cnn.json, when present."""
    path = RESULTS / "speaker_cv_ds_cnn.json"
    if not path.is_file():
        return {}
    return {s: f["accuracy"] for s, f in json.loads(path.read_text())["folds"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--student-overlay", type=Path, default=STUDENT_OVERLAY)
    parser.add_argument("--teacher-set", action="append", default=[])
    parser.add_argument("--student-set", action="append", default=[])
    parser.add_argument("--speaker", action="append", default=[])
    parser.add_argument("--temperature", type=float, default=3.0)
    parser.add_argument("--alpha", type=float, default=0.7, help="weight of the soft loss")
    parser.add_argument("--copies", type=int, default=4, help="augmented copies per clip")
    parser.add_argument("--control", action="store_true", help="also a hard-label student")
    parser.add_argument("--work-dir", type=Path, help="data and caches (default: a temp dir)")
    parser.add_argument("--name", default="distill_student")
    args = parser.parse_args()
    load_at_start = load_average()
    teacher_params = resolve_params(args.params, args.teacher_set)
    student_params = resolve_params(args.params, args.student_set, [args.student_overlay])
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        # apart: the two prepare steps (the student's adds synthetic voices) share no folder
        teacher_params = with_work_paths(teacher_params, work / "teacher")
        student_params = with_work_paths(student_params, work / "student")
        teacher_folds = speaker_folds(teacher_params)
        student_folds = speaker_folds(student_params)
        speakers = args.speaker or teacher_folds.speakers
        rows = {
            s: run_speaker(s, teacher_folds, student_folds, teacher_params, student_params, args)
            for s in speakers
        }
    figures = {
        "load_average_at_start": load_at_start,
        "config": {
            "student_overlay": str(args.student_overlay),
            "teacher_sets": args.teacher_set,
            "student_sets": args.student_set,
            "temperature": args.temperature,
            "alpha": args.alpha,
            "copies": args.copies,
            "teacher_epochs": teacher_params.train.epochs,
            "student_epochs": student_params.train.epochs,
            "quantization": teacher_params.export.quantization,
            "teacher_params_hash": teacher_params.digest(),
            "student_params_hash": student_params.digest(),
        },
        "speakers": rows,
    }
    table = markdown(figures, from_scratch_accuracies())
    record(args.name, figures, table)
    print(table.split("```")[0])
    print(f"results in {RESULTS / (args.name + '.md')}")


if __name__ == "__main__":
    main()
