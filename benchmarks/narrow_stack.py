"""A narrower copy of the pretrained speech-embedding stack, distilled from the full one.

Per held-out speaker (leave-one-speaker-out, `kws.cv.speaker_folds`):

1. the teacher: the default model (params.yaml) trained on the fold by `kws.evaluate.
   fit_and_score`, i.e. the frozen pretrained stack under the attention head;
2. the student stack: the same `kws.pretrained.LAYOUT` with every convolution's filters
   scaled by --width (the last one keeps the 96-dim embedding), warm-started from the
   teacher's weights by structured pruning: each convolution keeps its output channels of
   largest L1 norm, and the next one the matching input channels;
3. distillation: the student regresses the frozen teacher's 9 per-window embeddings (MSE
   on embeddings standardised by the teacher's per-dimension mean and std, which is what
   the head's normalisation layer sees) on the other speakers' clips plus --copies augmented
   copies (`kws.augment.Augmenter`: time shift, gain, and noise with --noise-prob), log-mels
   from `kws.features.log_mel_batch`, as the default's front end;
4. the student model: the default head trained on the frozen student stack exactly as the
   default trains its head (`kws.train.train` with model.embedding_stack naming the
   student's saved stack, see `with_stack`);
5. held-out accuracy of both with Keras and with the dynamic-int8 TFLite graph (the
   default export), one thread.

Then the cost of both graphs: convolution MFLOP per clip, TFLite bytes, and the median ms
per invoke (one thread, batch 1, one process per graph via benchmarks/isa_probe_timing.py)
natively and under benchmarks/cpuid_mask.c's AVX2-without-VNNI mask (--mask avx2).

Usage (from the repo root):
  KWS_FSDD_SOURCE=/path/to/fsdd python benchmarks/narrow_stack.py [--speaker S ...]
      [--width 0.5] [--copies 2] [--epochs 6] [--name narrow_stack]

With --unlabelled DIR --save-stack FILE it distils once, on the audio under DIR only (any
speech, no labels: LibriSpeech, Speech Commands), and writes the student stack to FILE;
`kws cv --set model.embedding_stack=FILE` then scores it on every held-out FSDD speaker,
and `model.embedding_stack: FILE` in params.yaml trains and ships the default on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import INVOKES_PER_ROUND, RESULTS, ROUNDS, WARMUP, load_average, record

import kws.model
from kws.audio import decode, fit_length, resample
from kws.augment import Augmenter
from kws.cv import SpeakerFolds, speaker_folds
from kws.data.download import sha256_file
from kws.data.features import FeatureSet, clips_of
from kws.errors import AudioError
from kws.evaluate import fit_and_score, score, score_tflite
from kws.export import to_tflite
from kws.features import log_mel_batch
from kws.params import FeatureParams, Params, PathParams, TrainParams, resolve_params
from kws.pretrained import (
    EMBEDDING_SIZE,
    LAYOUT,
    Layout,
    Weights,
    conv_filters,
    conv_weights,
    save_stack,
)
from kws.train import TrainResult, learning_rate_schedule, set_seed, train

if TYPE_CHECKING:
    import keras

GRAPHS = ("teacher_none", "teacher_dynamic_int8", "student_none", "student_dynamic_int8")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # what --unlabelled reads (libsndfile decodes them)
EMBEDDINGS_LAYER = "embeddings"  # kws.model's (batch, windows, 96) reshape


COSINE = TrainParams(lr_schedule="cosine")  # the default's schedule, for distillation


def student_layout(width: float) -> Layout:
    """LAYOUT with every convolution's filters scaled by width; the last keeps 96."""
    convs = len(conv_filters(LAYOUT))
    out: list[tuple[str, tuple[int, int], int]] = []
    n = 0
    for kind, size, filters in LAYOUT:
        if kind == "conv":
            n += 1
            filters = EMBEDDING_SIZE if n == convs else max(1, round(filters * width))
        out.append((kind, size, filters))
    return tuple(out)


def pruned_weights(weights: Weights, layout: Layout) -> Weights:
    """The teacher's convolutions cut to the layout's filters: the output channels of
    largest L1 norm, and the input channels the previous convolution kept."""
    filters = conv_filters(layout)
    kept_inputs = np.arange(weights[0][0].shape[2])
    out = []
    for (kernel, bias), n_out in zip(weights, filters, strict=True):
        kernel = kernel[:, :, kept_inputs, :]
        norms = np.abs(kernel).sum(axis=(0, 1, 2))
        kept = np.sort(np.argsort(-norms, kind="stable")[:n_out])
        out.append((kernel[..., kept].copy(), None if bias is None else bias[kept].copy()))
        kept_inputs = kept
    return tuple(out)


def with_stack(params: Params, stack_file: Path, fine_tune: int | None = None) -> Params:
    """params that build speech-embedding models on stack_file (model.embedding_stack)."""
    model: dict[str, Any] = {"embedding_stack": str(stack_file)}
    if fine_tune is not None:
        model["fine_tune"] = fine_tune
    return params.replace(model=model)


def embedding_model(model: keras.Model) -> keras.Model:
    """The log-mel -> (windows, 96) embedding part of a speech-embedding model."""
    import keras

    return keras.Model(model.inputs, model.get_layer(EMBEDDINGS_LAYER).output)


def stack_model(params: Params) -> keras.Model:
    """The log-mel -> embeddings model of params' stack, its last model.fine_tune
    convolutions trainable (a distillation student: all of them; the teacher: none)."""
    fp = params.features
    rows = np.zeros((1, fp.n_frames, fp.n_mels), dtype=np.float32)  # fits only the head's norm
    return embedding_model(kws.model.build_model(params.model, (fp.n_frames, fp.n_mels), 10, rows))


def stack_weights(model: keras.Model) -> Weights:
    """(kernel, bias or None) of a model's embedding convolutions, in order."""
    convs = [layer for layer in model.layers if layer.name.startswith("embedding_conv")]
    convs.sort(key=lambda layer: int(layer.name.removeprefix("embedding_conv")))
    return tuple(
        (w[0], w[1] if len(w) > 1 else None) for w in (layer.get_weights() for layer in convs)
    )


def conv_mflop(model: keras.Model) -> float:
    """Multiply-adds x 2 of a model's Conv2D layers per clip, in millions."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            total += 2 * int(np.prod(out[1:3])) * int(np.prod(layer.kernel.shape))
    return round(total / 1e6, 1)


def distillation_set(
    fold: FeatureSet, params: Params, copies: int, noise_prob: float, cache: Path
) -> np.ndarray:
    """Log-mels (n, frames, mels, 1) of the fold's train clips and `copies` augmented copies."""
    clips = clips_of(list(fold.paths[fold.splits == "train"]), params.features, cache)
    return augmented_log_mels(clips, params, copies, noise_prob)


def augmented_log_mels(
    clips: np.ndarray, params: Params, copies: int, noise_prob: float
) -> np.ndarray:
    """Log-mels (n, frames, mels, 1) of clips, then of `copies` augmented copies of them."""
    fp = params.features
    augmenter = Augmenter(
        dataclasses.replace(params.augment, noise_prob=noise_prob), params.seed + 7
    )
    sets = [log_mel_batch(clips, fp)]
    for _ in range(copies):
        sets.append(
            log_mel_batch(np.stack([augmenter.waveform(c, fp.sample_rate) for c in clips]), fp)
        )
    return np.concatenate(sets)[..., np.newaxis].astype(np.float32)


def unlabelled_clips(folder: Path, fp: FeatureParams, limit: int) -> tuple[np.ndarray, int, int]:
    """Clips (n, samples) cut from the audio files under folder, in path order, up to limit:
    a file shorter than a clip is centred in one (as a request is at serving time), a longer
    one cut into consecutive clips, silent ones dropped. Also: files read, files unreadable."""
    n = fp.clip_samples
    clips: list[np.ndarray] = []
    read = failed = 0
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        try:
            wave, rate = decode(path)
        except AudioError as exc:
            failed += 1
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        read += 1
        wave = resample(wave, rate, fp.sample_rate)
        pieces = (
            [fit_length(wave, n)]
            if len(wave) <= n
            else [wave[start : start + n] for start in range(0, len(wave) - n + 1, n)]
        )
        clips += [piece for piece in pieces if np.any(piece)]
        if read % 1000 == 0:
            print(f"{read} files read, {len(clips)} clips", flush=True)
        if len(clips) >= limit:
            break
    if not clips:
        raise SystemExit(f"error: no audio clips under {folder} ({failed} unreadable files)")
    return np.stack(clips[:limit]).astype(np.float32), read, failed


def distil_on_folder(params: Params, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Distil the student stack from the pretrained one on the unlabelled audio under
    args.unlabelled only (no FSDD clip, so a leave-one-speaker-out run on the saved stack is
    still held out), save it to args.save_stack; its figures."""
    started = time.perf_counter()
    clips, read, failed = unlabelled_clips(args.unlabelled, params.features, args.max_clips)
    held_out = np.arange(len(clips)) % 10 == 9  # every tenth clip measures the copy
    x = augmented_log_mels(clips[~held_out], params, args.copies, args.noise_prob)
    x_held_out = augmented_log_mels(clips[held_out], params, 0, 0.0)
    teacher = stack_model(params.replace(model={"embedding_stack": None}))
    targets = np.asarray(teacher.predict(x, batch_size=128, verbose=0))
    data_seconds = time.perf_counter() - started

    layout = student_layout(args.width)
    pruned = save_stack(work / "pruned.npz", layout, pruned_weights(conv_weights(), layout))
    set_seed(params.seed)
    student = stack_model(with_stack(params, pruned, len(conv_filters(layout))))
    pruned_error = embedding_error(teacher, student, x_held_out)
    t0 = time.perf_counter()
    losses = distill(student, x, targets, args.epochs, args.batch_size, args.learning_rate)
    distill_seconds = time.perf_counter() - t0
    distilled_error = embedding_error(teacher, student, x_held_out)
    saved = save_stack(args.save_stack, layout, stack_weights(student))
    print(f"embedding error on held-out clips {pruned_error} -> {distilled_error}", flush=True)
    print(
        f"saved {saved}; its held-out accuracy: kws cv --set model.embedding_stack={saved}",
        flush=True,
    )
    return {
        "unlabelled": {"files_read": read, "files_unreadable": failed, "clips": len(clips)},
        "n_distillation_inputs": len(x),
        "n_held_out_clips": int(held_out.sum()),
        "embedding_error_heldout": {"pruned": pruned_error, "distilled": distilled_error},
        "distill_loss_per_epoch": losses,
        "seconds": {
            "data_and_targets": round(data_seconds, 1),
            "distillation_fit": round(distill_seconds, 1),
        },
        "conv_mflop_per_clip": {"teacher": conv_mflop(teacher), "student": conv_mflop(student)},
        "stack": {"file": str(saved), "sha256": sha256_file(saved)},
    }


def distill(
    student: keras.Model,
    x: np.ndarray,
    targets: np.ndarray,
    epochs: int,
    batch_size: int,
    learning_rate: float,
) -> list[float]:
    """Fit the student embedding model to the teacher's embeddings; the loss per epoch."""
    import keras

    mean = targets.reshape(-1, EMBEDDING_SIZE).mean(axis=0)
    scale = 1.0 / (targets.reshape(-1, EMBEDDING_SIZE).std(axis=0) + 1e-6)
    del mean  # a mean offset cancels in the difference; only the scale weights dimensions

    def standardised_mse(y_true: Any, y_pred: Any) -> Any:
        return keras.ops.mean(keras.ops.square((y_pred - y_true) * scale))

    steps = int(np.ceil(len(x) / batch_size))
    schedule = learning_rate_schedule(COSINE, steps, learning_rate, epochs)
    student.compile(optimizer=keras.optimizers.Adam(schedule), loss=standardised_mse)
    fit = student.fit(x, targets, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=2)
    return [round(float(v), 4) for v in fit.history["loss"]]


def embedding_error(teacher: keras.Model, student: keras.Model, x: np.ndarray) -> float:
    """Mean standardised squared error of the student's embeddings against the teacher's."""
    t = np.asarray(teacher.predict(x, batch_size=128, verbose=0))
    s = np.asarray(student.predict(x, batch_size=128, verbose=0))
    std = t.reshape(-1, EMBEDDING_SIZE).std(axis=0) + 1e-6
    return round(float(np.mean(((s - t) / std) ** 2)), 4)


def one_fold(
    folds: SpeakerFolds, speaker: str, params: Params, args: argparse.Namespace, work: Path
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Teacher and distilled student on one held-out speaker: figures and TFLite graphs."""
    fold = folds.fold(speaker)
    labels, cache = folds.labels, work / "clips"
    started = time.perf_counter()
    teacher = fit_and_score(fold, labels, params, cache_dir=cache)
    teacher_embed = embedding_model(teacher.result.model)
    print(f"{speaker}: teacher keras {teacher.metrics['accuracy']:.4f}", flush=True)

    t0 = time.perf_counter()
    x = distillation_set(fold, params, args.copies, args.noise_prob, cache)
    targets = np.asarray(teacher_embed.predict(x, batch_size=128, verbose=0))
    data_seconds = time.perf_counter() - t0

    layout = student_layout(args.width)
    warm = pruned_weights(conv_weights(), layout)
    pruned = save_stack(work / f"{speaker}_pruned.npz", layout, warm)
    set_seed(params.seed)
    student_embed = stack_model(with_stack(params, pruned, len(conv_filters(layout))))
    x_test = fold.split("test")[0][..., np.newaxis]
    warm_error = embedding_error(teacher_embed, student_embed, x_test)
    t0 = time.perf_counter()
    losses = distill(student_embed, x, targets, args.epochs, args.batch_size, args.learning_rate)
    distill_seconds = time.perf_counter() - t0
    distilled_error = embedding_error(teacher_embed, student_embed, x_test)
    print(f"{speaker}: embedding error {warm_error} -> {distilled_error}", flush=True)

    distilled = save_stack(work / f"{speaker}_distilled.npz", layout, stack_weights(student_embed))
    student = train(fold, labels, with_stack(params, distilled), cache_dir=cache)
    student_keras = score(student.model, fold, labels, "test")
    models = {"teacher": teacher.result.model, "student": student.model}
    tuned_figures: dict[str, Any] = {}
    if args.fine_tune_epochs > 0:
        tuned = fine_tuned_student(fold, labels, params, (layout, distilled), args, cache)
        models["student_tuned"] = tuned.model
        tuned_figures = {
            "student_tuned_keras": round(score(tuned.model, fold, labels, "test")["accuracy"], 4)
        }

    graphs, accuracy = {}, {}
    calibration = fold.split("train")[0][:1]
    for who, model in models.items():
        for quantization in ("none", "dynamic_int8"):
            graph = to_tflite(model, quantization, calibration)
            graphs[f"{who}_{quantization}"] = graph
            metrics = score_tflite(graph, labels, fold, params.features, "test")
            accuracy[f"{who}_{quantization}"] = round(metrics["accuracy"], 4)
    figures = {
        "n_test": int(teacher.metrics["n"]),
        "n_distillation_inputs": len(x),
        "accuracy": {
            "teacher_keras": round(teacher.metrics["accuracy"], 4),
            "student_keras": round(student_keras["accuracy"], 4),
            **tuned_figures,
            **{f"{k}_tflite": v for k, v in accuracy.items()},
        },
        "embedding_error_heldout": {"pruned": warm_error, "distilled": distilled_error},
        "distill_loss_per_epoch": losses,
        "seconds": {
            "teacher_fit": round(teacher.result.seconds, 1),
            "distillation_data_and_targets": round(data_seconds, 1),
            "distillation_fit": round(distill_seconds, 1),
            "student_head_fit": round(student.seconds, 1),
            "student_tuned_fit": round(tuned.seconds, 1) if args.fine_tune_epochs > 0 else 0.0,
            "fold_wall": round(time.perf_counter() - started, 1),
        },
        "parameters": {
            "teacher": int(teacher.result.model.count_params()),
            "student": int(student.model.count_params()),
        },
        "conv_mflop_per_clip": {
            "teacher": conv_mflop(teacher.result.model),
            "student": conv_mflop(student.model),
        },
        "tflite_bytes": {name: len(graph) for name, graph in graphs.items()},
    }
    print(f"{speaker}: {json.dumps(figures['accuracy'])}", flush=True)
    return figures, {name: graph for name, graph in graphs.items() if name in GRAPHS}


def fine_tuned_student(
    fold: FeatureSet,
    labels: list[str],
    params: Params,
    stack: tuple[Layout, Path],
    args: argparse.Namespace,
    cache: Path,
) -> TrainResult:
    """The student model trained the default way, then with all its convolutions trained
    on the task for --fine-tune-epochs more (kws.train's two phases, at train.learning_rate
    x train.fine_tune_lr_scale)."""
    layout, stack_file = stack
    tuned_params = with_stack(params, stack_file, len(conv_filters(layout))).replace(
        train={"fine_tune_epochs": args.fine_tune_epochs}
    )
    return train(fold, labels, tuned_params, cache_dir=cache)


def untrained_graphs(
    params: Params, width: float, work: Path
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Teacher and pruned student under untrained heads (normalisation fitted on log-mels of
    noise, as benchmarks/isa_probe.py): their graphs and cost (latency needs no training)."""
    fp = params.features
    rng = np.random.default_rng(params.seed)
    gains = 10 ** rng.uniform(-3, 0, size=(32, 1))
    x = log_mel_batch((gains * rng.standard_normal((32, fp.clip_samples))).astype(np.float32), fp)
    shape = (fp.n_frames, fp.n_mels)
    layout = student_layout(width)
    models = {"teacher": kws.model.build_model(params.model, shape, 10, x)}
    pruned = save_stack(work / "pruned.npz", layout, pruned_weights(conv_weights(), layout))
    models["student"] = kws.model.build_model(with_stack(params, pruned).model, shape, 10, x)
    graphs = {
        f"{who}_{quantization}": to_tflite(model, quantization, x)
        for who, model in models.items()
        for quantization in ("none", "dynamic_int8")
    }
    cost = {
        "conv_mflop_per_clip": {who: conv_mflop(model) for who, model in models.items()},
        "parameters": {who: int(model.count_params()) for who, model in models.items()},
        "tflite_bytes": {name: len(graph) for name, graph in graphs.items()},
    }
    return graphs, cost


def latency(graphs: dict[str, bytes], params: Params, masks: list[str], repeats: int, work: Path):
    """Median ms per invoke of each graph, one thread, one process per graph and mask."""
    from isa_probe import LABELS, NATIVE, check_host, compile_shim, run_timing, summary

    shim = compile_shim(check_host(), work / "cpuid_mask.so") if masks else work / "none.so"
    folder = work / "graphs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, graph in graphs.items():
        (folder / f"{name}.tflite").write_bytes(graph)
    config = work / "timing.json"
    config.write_text(
        json.dumps(
            {
                "graphs": {name: str(folder / f"{name}.tflite") for name in graphs},
                "labels": LABELS,
                "features": params.features.__dict__,
                "rounds": ROUNDS,
                "invokes_per_round": INVOKES_PER_ROUND,
                "warmup": WARMUP,
            }
        )
    )
    runs: dict[str, dict[str, list[dict]]] = {m: {g: [] for g in graphs} for m in [NATIVE, *masks]}
    for _ in range(repeats):
        for name in graphs:
            for mask in runs:
                run = run_timing(mask, name, shim, config)
                runs[mask][name].append(run)
                print(f"{mask} {name}: {run['latency_ms']}", flush=True)
    return {mask: summary(r) for mask, r in runs.items()}


def markdown(figures: dict[str, Any]) -> str:
    """The result tables."""
    header = [
        "| held-out | teacher keras | teacher int8 TFLite | student keras | student float32 "
        "TFLite | student int8 TFLite | embedding error pruned -> distilled | distill s | "
        "student head s | teacher fit s | tuned student keras | tuned student int8 TFLite "
        "| tuning s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    untrained = ["Latency only (--latency-only): untrained heads, no accuracy."]
    rows = header if figures["folds"] else untrained
    for speaker, f in figures["folds"].items():
        a, s, e = f["accuracy"], f["seconds"], f["embedding_error_heldout"]
        tuned = (
            f" {a['student_tuned_keras']:.4f} | {a['student_tuned_dynamic_int8_tflite']:.4f} | "
            f"{s['student_tuned_fit']:.0f} |"
            if "student_tuned_keras" in a
            else " - | - | - |"
        )
        rows.append(
            f"| {speaker} | {a['teacher_keras']:.4f} | {a['teacher_dynamic_int8_tflite']:.4f} | "
            f"{a['student_keras']:.4f} | {a['student_none_tflite']:.4f} | "
            f"{a['student_dynamic_int8_tflite']:.4f} | {e['pruned']} -> {e['distilled']} | "
            f"{s['distillation_data_and_targets'] + s['distillation_fit']:.0f} | "
            f"{s['student_head_fit']:.0f} | {s['teacher_fit']:.0f} |{tuned}"
        )
    first = figures["cost"]
    cost = [
        "",
        "| graph | conv MFLOP per clip | parameters | TFLite bytes | "
        + " | ".join(f"median ms ({mask})" for mask in figures.get("latency_ms", {}))
        + " |",
        "|---|---|---|---|" + "---|" * len(figures.get("latency_ms", {})),
    ]
    for name in GRAPHS:
        who = name.split("_", 1)[0]
        times = " | ".join(
            f"{by_graph[name]['median']:.3f}" for by_graph in figures.get("latency_ms", {}).values()
        )
        cost.append(
            f"| {name} | {first['conv_mflop_per_clip'][who]} | {first['parameters'][who]:,} | "
            f"{first['tflite_bytes'][name]:,} | {times} |"
        )
    return "\n".join(rows + cost)


def folder_markdown(figures: dict[str, Any]) -> str:
    """The result table of a --unlabelled run."""
    f = figures["unlabelled"]
    u, e, s = f["unlabelled"], f["embedding_error_heldout"], f["seconds"]
    return "\n".join(
        [
            "| audio files (unreadable) | clips | held-out clips | width | conv MFLOP teacher -> "
            "student | held-out embedding error pruned -> distilled | distillation s | stack |",
            "|---|---|---|---|---|---|---|---|",
            f"| {u['files_read']} ({u['files_unreadable']}) | {u['clips']} | "
            f"{f['n_held_out_clips']} | {figures['settings']['width']} | "
            f"{f['conv_mflop_per_clip']['teacher']} -> {f['conv_mflop_per_clip']['student']} | "
            f"{e['pruned']} -> {e['distilled']} | "
            f"{s['data_and_targets'] + s['distillation_fit']:.0f} | `{f['stack']['file']}` |",
        ]
    )


def settings(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    """The run's settings, for its results file."""
    return {
        "width": args.width,
        "student_filters": conv_filters(student_layout(args.width)),
        "copies": args.copies,
        "noise_prob": args.noise_prob,
        "distill_epochs": args.epochs,
        "fine_tune_epochs": args.fine_tune_epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "unlabelled": str(args.unlabelled) if args.unlabelled else None,
        "sets": args.sets,
        "params_hash": params.digest(),
        "threads": {k: os.environ.get(k) for k in THREAD_VARIABLES},
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value")
    parser.add_argument("--speaker", action="append", default=[], help="held-out speaker(s)")
    parser.add_argument("--width", type=float, default=0.5, help="channel factor of the student")
    parser.add_argument("--copies", type=int, default=2, help="augmented copies per train clip")
    parser.add_argument("--noise-prob", type=float, default=0.5, help="noise on the copies")
    parser.add_argument("--epochs", type=int, default=6, help="distillation epochs")
    parser.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=0,
        help=">0: also a student whose convolutions then train on the task this many epochs",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--mask", action="append", default=[], choices=("avx2", "avx2_vnni"))
    parser.add_argument("--repeats", type=int, default=1, help="timing processes per graph")
    parser.add_argument("--work-dir", type=Path, help="data and feature cache (default: temp)")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="no training: time the teacher and a pruned student under untrained heads",
    )
    parser.add_argument(
        "--unlabelled",
        type=Path,
        help="distil on the audio files under this folder only (.wav/.flac/.ogg, e.g. "
        "LibriSpeech) instead of per fold, and write the stack to --save-stack",
    )
    parser.add_argument("--save-stack", type=Path, help="with --unlabelled: the stack file")
    parser.add_argument(
        "--max-clips", type=int, default=20000, help="with --unlabelled: clips to read at most"
    )
    parser.add_argument("--name", default="narrow_stack")
    args = parser.parse_args()
    if not 0 < args.width <= 1:
        sys.exit("error: --width must be in (0, 1]")
    if (args.unlabelled is None) != (args.save_stack is None):
        sys.exit("error: --unlabelled and --save-stack go together")
    if args.unlabelled is not None and not args.unlabelled.is_dir():
        sys.exit(f"error: --unlabelled {args.unlabelled} is not a folder")
    start_load = load_average()
    params = resolve_params(args.params, args.sets)
    if args.unlabelled is not None:
        with tempfile.TemporaryDirectory(prefix="narrow-stack-") as tmp:
            figures = {"load_average_at_start": start_load, "settings": settings(args, params)}
            figures["unlabelled"] = distil_on_folder(params, args, Path(tmp))
        table = folder_markdown(figures) + f"\n\n```json\n{json.dumps(figures, indent=2)}\n```"
        record(args.name, figures, table)
        print(folder_markdown(figures))
        print(f"results in {RESULTS / (args.name + '.md')}")
        return
    with tempfile.TemporaryDirectory(prefix="narrow-stack-") as tmp:
        work = args.work_dir or Path(tmp)
        paths = PathParams(**{k: str(work / v) for k, v in PathParams().__dict__.items()})
        params = params.replace(paths=paths, registry={"register": False})
        folds = speaker_folds(params)
        unknown = sorted(set(args.speaker) - set(folds.speakers))
        if unknown:
            sys.exit(f"error: unknown speaker(s) {', '.join(unknown)}: {', '.join(folds.speakers)}")
        results: dict[str, dict[str, Any]] = {}
        graphs: dict[str, bytes] = {}
        for speaker in [] if args.latency_only else args.speaker or folds.speakers:
            results[speaker], fold_graphs = one_fold(folds, speaker, params, args, work)
            graphs = graphs or fold_graphs  # latency does not depend on the fold's weights
        if results:
            first = next(iter(results.values()))
            cost = {k: first[k] for k in ("conv_mflop_per_clip", "parameters", "tflite_bytes")}
        else:
            graphs, cost = untrained_graphs(params, args.width, work)
        timing = latency(graphs, params, args.mask, args.repeats, Path(tmp))
    figures = {
        "load_average_at_start": start_load,
        "settings": settings(args, params),
        "folds": results,
        "cost": cost,
        "latency_ms": timing,
    }
    table = markdown(figures) + f"\n\n```json\n{json.dumps(figures, indent=2)}\n```"
    record(args.name, figures, table)
    print(markdown(figures))
    print(f"results in {RESULTS / (args.name + '.md')}")


if __name__ == "__main__":
    main()
