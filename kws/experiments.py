"""Comparable runs of the shipped model: the v1 baseline, the v2 default (params.yaml) and
variations of the default, in one MLflow experiment; and the table of them."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kws import stages, tracking
from kws.data import read_info
from kws.data.features import FEATURES_FILE, load_feature_set
from kws.errors import ParamsError
from kws.evaluate import score_tflite
from kws.package import TFLITE_FILE, read_package
from kws.params import Params, PathParams, params_from_dict, resolve_params
from kws.train import load_training

log = logging.getLogger(__name__)
EXPERIMENT = "kws-experiments"
BASELINE = "v1_baseline"
DEFAULT = "v2_default"
# Sections that do not change what a run learns or ships: never reported as a change.
BOOKKEEPING = ("paths.", "registry.")


@dataclass(frozen=True)
class Variation:
    """One row of the comparison: a change of the default, inline and/or as an overlay file."""

    description: str
    change: dict[str, Any] = field(default_factory=dict)
    overlay: str | None = None  # relative to the params file's folder (the project root)


# Every variation changes one thing of the default (params.yaml as it is at run time), so a
# difference is attributable; the v1 baseline is the overlay that defines v1.
VARIATIONS: dict[str, Variation] = {
    BASELINE: Variation(
        "v1: the from-scratch CNN", overlay="pipelines/configs/params/baseline.yaml"
    ),
    DEFAULT: Variation("v2: params.yaml as it is"),
    "float32": Variation("exported without quantisation", {"export": {"quantization": "none"}}),
    "int8_full": Variation(
        "full-integer int8 export, calibrated on train clips", {"export": {"quantization": "int8"}}
    ),
    "clip_1.0s": Variation("1.0 s clips", {"features": {"clip_seconds": 1.0}}),
    "fine_tune_2": Variation("last two convolutions trainable", {"model": {"fine_tune": 2}}),
    "clean_augment": Variation(
        "no noise, room or telephone augmentation (shift and gain only)",
        {"augment": {"noise_prob": 0.0, "reverb_prob": 0.0, "telephone_prob": 0.0}},
    ),
}


@dataclass(frozen=True)
class ExperimentRow:
    """One run of the comparison."""

    name: str
    changes: dict[str, str]
    run_id: str
    accuracy: float  # of the exported TFLite package: what ships
    macro_f1: float
    keras_accuracy: float
    val_accuracy: float
    train_seconds: float
    model_bytes: int
    quantization: str
    weights_from: str  # the row whose training this row's export reuses ("" = its own)


def resolve_variation(
    params_file: Path, overrides: list[str] | None, overlays: list[Path] | None, name: str
) -> Params:
    """Params of a variation: its overlay under the user's overlays and --set, then its change."""
    if name not in VARIATIONS:
        raise ParamsError(f"unknown variation {name!r} (choose from {', '.join(VARIATIONS)})")
    variation = VARIATIONS[name]
    own = [params_file.parent / variation.overlay] if variation.overlay else []
    tree = resolve_params(params_file, overrides, [*own, *(overlays or [])]).to_dict()
    _deep_update(tree, variation.change)
    return params_from_dict(tree, source=f"variation {name}")


def changed_params(default: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, str]:
    """Flat parameters whose value differs from the default's (bookkeeping sections aside)."""
    return {
        key: _text(other[key])
        for key in other
        if not key.startswith(BOOKKEEPING) and not _same(other[key], default.get(key))
    }


def isolate(params: Params, name: str, root: Path) -> Params:
    """A variation's params with its own folders under root, the experiment, no registry."""
    tree = params.to_dict()
    run_dir = root / name
    paths = {k: str(run_dir / k) for k in ("features", "model", "package", "reports")}
    data_key = tracking_digest(tree["data"])
    paths["prepared"] = str(root / f"prepared-{data_key}")  # same data, prepared once
    tree["paths"] = {**PathParams(**tree["paths"]).__dict__, **paths}
    tree["registry"] = {**tree["registry"], "experiment": EXPERIMENT, "register": False}
    return params_from_dict(tree, source=f"variation {name}")


def tracking_digest(tree: Mapping[str, Any]) -> str:
    """A short stable digest of a params subtree."""
    import hashlib

    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:10]


def training_key(params: Params) -> str:
    """What a training depends on: everything but the export and bookkeeping sections."""
    tree = {k: v for k, v in params.to_dict().items() if k not in ("export", "paths", "registry")}
    return tracking_digest(tree)


def run_experiments(
    runs: Mapping[str, Params], default: Params, root: Path, command: str = ""
) -> list[ExperimentRow]:
    """Train, export and evaluate each variation; runs that differ only in how they export
    share one training, so the table shows the export's own effect."""
    default_flat = default.flat()
    trained: dict[str, tuple[str, Path]] = {}  # training key -> (row name, model folder)
    prepared: set[str] = set()
    rows = []
    for name, resolved in runs.items():
        changes = changed_params(default_flat, resolved.flat())
        if name != DEFAULT and not changes:
            log.warning("variation %s changes nothing of the default: skipped", name)
            continue
        p = isolate(resolved, name, root)
        if p.paths.prepared not in prepared:
            stages.fetch(p)
            stages.prepare(p)
            prepared.add(p.paths.prepared)
        log.info("experiment %s: %s", name, changes or "the default")
        stages.featurize(p)
        tags = {"variation": name, "variation_changes": json.dumps(changes)}
        if command:
            tags["kws_command"] = command
        key = training_key(p)
        if key in trained:
            source_name, source_dir = trained[key]
            _reuse_training(p, source_dir, name, {**tags, "weights_from": source_name})
        else:
            stages.train(p, run_name=name, tags=tags)
            trained[key] = (name, Path(p.paths.model))
            source_name = ""
        keras_metrics = stages.evaluate(p)
        package = stages.export(p)
        shipped = score_package(package, p)
        mlrun = tracking.load_run(Path(p.paths.model))
        model_bytes = (package / TFLITE_FILE).stat().st_size
        if mlrun is not None:
            mlrun.log_metrics(
                {
                    "tflite_test_accuracy": shipped["accuracy"],
                    "tflite_test_macro_f1": shipped["macro_f1"],
                    "tflite_bytes": model_bytes,
                }
            )
        result = load_training(Path(p.paths.model))
        rows.append(
            ExperimentRow(
                name=name,
                changes=changes,
                run_id=mlrun.run_id if mlrun else "",
                accuracy=shipped["accuracy"],
                macro_f1=shipped["macro_f1"],
                keras_accuracy=keras_metrics["accuracy"],
                val_accuracy=max(result.history.get("val_accuracy", [0.0])),
                train_seconds=result.seconds,
                model_bytes=model_bytes,
                quantization=p.export.quantization,
                weights_from=source_name,
            )
        )
    return rows


def score_package(package: Path, params: Params) -> dict[str, Any]:
    """Metrics of an exported package's TFLite model on the test split's features."""
    features = load_feature_set(Path(params.paths.features) / FEATURES_FILE)
    shipped = read_package(package)
    return score_tflite(shipped.model_bytes, shipped.labels, features, shipped.features)


def _reuse_training(params: Params, source: Path, name: str, tags: dict[str, str]) -> None:
    """Copy another row's trained model into this row's folder, under a run of its own."""
    model_dir = Path(params.paths.model)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(source, model_dir, ignore=shutil.ignore_patterns(tracking.RUN_FILE))
    result = load_training(model_dir)
    info = read_info(Path(params.paths.prepared))
    with tracking.training_run(params, info["data_hash"], EXPERIMENT, name, tags=tags) as run:
        tracking.save_run_id(run.run_id, model_dir)
        run.log_metrics(
            {"train_seconds": result.seconds, "parameters": result.model.count_params()}
        )


def markdown_table(rows: list[ExperimentRow], command: str) -> str:
    """The comparison as a markdown document."""
    lines = [
        "# Experiment comparison",
        "",
        f"Generated by `{command}`; MLflow experiment `{EXPERIMENT}`. Test = the held-out "
        f"speaker of the default split. Every variation changes one thing of `{DEFAULT}` "
        "(params.yaml); `changes` lists each parameter that differs from it. Test accuracy "
        "and macro-F1 are those of the exported TFLite package (what ships); the Keras column "
        "is the same model before conversion. Rows marked `weights of X` reuse X's training "
        "and differ only in the export.",
        "",
        "| run | changes | test accuracy (TFLite) | test macro-F1 (TFLite) | "
        "test accuracy (Keras) | best val accuracy | train s | model MB | MLflow run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        change = ", ".join(f"{k}={v}" for k, v in r.changes.items()) or "—"
        train_s = f"{r.train_seconds:.0f}"
        if r.weights_from:
            train_s += f" (weights of {r.weights_from})"
        lines.append(
            f"| {r.name} | {change} | {r.accuracy:.4f} | {r.macro_f1:.4f} | "
            f"{r.keras_accuracy:.4f} | {r.val_accuracy:.4f} | {train_s} | "
            f"{r.model_bytes / 1e6:.3f} | `{r.run_id}` |"
        )
    return "\n".join(lines) + "\n"


def _deep_update(tree: dict[str, Any], change: Mapping[str, Any]) -> None:
    for key, value in change.items():
        if isinstance(value, Mapping):
            _deep_update(tree[key], value)
        else:
            tree[key] = value


def _text(value: Any) -> str:
    """A parameter value as shown: floats to 4 significant digits (1.0, not 1)."""
    if isinstance(value, str):  # as MLflow logs it
        try:
            number: float = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return value
        value = number
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        text = f"{value:.4g}"
        return text if any(c in text for c in ".en") else f"{text}.0"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _same(a: Any, b: Any) -> bool:
    """Equal as parameters: numbers by value (MLflow's "1" is params.yaml's 1.0)."""
    ta, tb = _text(a), _text(b)
    try:
        return float(ta) == float(tb)
    except ValueError:
        return ta == tb


def comparison_rows(storage: str | None, study_name: str | None) -> list[dict[str, Any]]:
    """The latest finished run of each variation, then the study's best trial, as table rows."""
    from mlflow.tracking import MlflowClient

    tracking.configure()
    client = MlflowClient()
    latest: dict[str, Any] = {}
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        runs = client.search_runs(
            [experiment.experiment_id],
            "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
        )
        for run in runs:
            name = run.data.tags.get("mlflow.runName", "")
            if name in VARIATIONS and name not in latest:
                latest[name] = run
    default = latest[DEFAULT].data.params if DEFAULT in latest else {}
    rows = [_row(name, latest[name], default) for name in VARIATIONS if name in latest]
    if storage and study_name:
        import optuna  # heavy: only a study needs it

        try:
            best = optuna.load_study(study_name=study_name, storage=storage).best_trial
        except (KeyError, ValueError) as exc:  # no such study, or no completed trial
            log.warning("no Optuna best trial to compare (%s)", exc)
        else:
            run = client.get_run(best.user_attrs["mlflow_run_id"])
            rows.append(_row(f"optuna best (trial {best.number})", run, default))
    return rows


def _row(name: str, run: Any, default: Mapping[str, Any]) -> dict[str, Any]:
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    changes = changed_params(default, params) if default else {}
    return {
        "run": name,
        "changes": "; ".join(f"{k}={v}" for k, v in changes.items()),
        "test_accuracy_tflite": _rounded(metrics.get("tflite_test_accuracy")),
        "test_macro_f1_tflite": _rounded(metrics.get("tflite_test_macro_f1")),
        "test_accuracy_keras": _rounded(metrics.get("test_accuracy")),
        "train_seconds": _rounded(metrics.get("train_seconds"), 1),
        "weights_from": tags.get("weights_from", ""),
        "model_mb": _rounded(metrics["tflite_bytes"] / 1e6, 3) if "tflite_bytes" in metrics else "",
        "quantization": params.get("export.quantization", ""),
        "mlflow_run": run.info.run_id,
        "command": tags.get("kws_command", ""),
        "data_hash": tags.get("data_hash", ""),
    }


def _rounded(value: float | None, digits: int = 4) -> float | str:
    return "" if value is None else round(float(value), digits)


PLOTS = ("optuna_history.png", "optuna_importance.png")  # written by kws.tune.save_plots
# Columns of the markdown table (the CSV has them all).
TABLE_COLUMNS = (
    ("run", "run"),
    ("changes", "changes vs v2_default"),
    ("test_accuracy_tflite", "test accuracy (TFLite)"),
    ("test_macro_f1_tflite", "test macro-F1 (TFLite)"),
    ("test_accuracy_keras", "test accuracy (Keras)"),
    ("train_seconds", "train s"),
    ("model_mb", "model MB"),
    ("quantization", "export"),
    ("mlflow_run", "MLflow run"),
)


def write_comparison(
    rows: list[dict[str, Any]], markdown: Path, command: str, study_commands: list[str]
) -> Path:
    """Write the comparison as markdown and CSV (same stem); return the CSV path."""
    import csv

    markdown.parent.mkdir(parents=True, exist_ok=True)
    csv_path = markdown.with_suffix(".csv")
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    hashes = sorted({r["data_hash"][:12] for r in rows if r["data_hash"]})
    lines = [
        "# The shipped model: v1 baseline, v2 default, its variations and the best Optuna trial",
        "",
        f"Generated by `{command}` from the MLflow runs of experiment `{EXPERIMENT}` (rows "
        f"`{BASELINE}` to the variations) and the Optuna study's best trial (experiment "
        "`kws-tuning`). `changes` lists every parameter that differs from `v2_default` "
        "(params.yaml when the runs were made). Test accuracy is on the test speaker, whom no "
        "run trained or was selected on (Optuna chose on the val speaker); the TFLite columns "
        "score the exported package (what ships, in its export quantisation), the Keras column "
        "the same model before conversion. Model MB = the package's model.tflite. Rows whose "
        "train seconds say `weights of X` reuse X's training and differ only in the export.",
        "",
        f"Data: FSDD from `KWS_FSDD_SOURCE`, data hash {', '.join(f'`{h}`' for h in hashes)}."
        if hashes
        else "",
        "",
        "| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    for row in rows:
        cells = []
        for key, _ in TABLE_COLUMNS:
            value = row[key]
            if key == "mlflow_run":
                value = f"`{value}`"
            elif key == "changes":
                value = value.replace("; ", "<br>") or "—"
            elif key == "train_seconds" and row["weights_from"]:
                value = f"{value} (weights of {row['weights_from']})"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    runs = [c for c in dict.fromkeys(r["command"] for r in rows) if c and c not in study_commands]
    lines += ["", "## Commands", ""]
    lines += [f"- `{c}`" for c in runs]
    lines += [f"- `{c}` (the Optuna study)" for c in study_commands]
    plots = [name for name in PLOTS if (markdown.parent / name).is_file()]
    if plots:
        lines += ["", "## The Optuna study", ""]
        lines += [f"![{name}]({name})" for name in plots]
    markdown.write_text("\n".join(lines) + "\n")
    return csv_path


def study_commands(storage: str, study_name: str) -> list[str]:
    """Command lines that added trials to a study (empty if there is no such study)."""
    import optuna  # heavy: only a study needs it

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return []
    return list(study.user_attrs.get("commands", []))
