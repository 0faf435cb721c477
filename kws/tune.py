"""Hyperparameter search with Optuna: seeded TPE, median pruning, resumable RDB storage.

Each trial trains on the train split and is scored on the val split (a speaker the
model never heard); the test speaker is only reported, never used to choose.
Trials are MLflow runs nested under one parent run per study.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kws import tracking
from kws.data import load_prepared
from kws.data.features import FeatureSet, featurize_samples
from kws.errors import KwsError
from kws.evaluate import fit_and_score, score_tflite
from kws.export import representative_rows, to_tflite
from kws.params import Params, params_from_dict

log = logging.getLogger(__name__)
DEFAULT_STORAGE = "sqlite:///optuna.db"
PARENT_ATTR = "mlflow_parent_run_id"


def study_name_for(params: Params) -> str:
    """The study of these base params: the same params.yaml resumes it, a changed one (a new
    default to search around) starts a new study instead of mixing the two searches."""
    tree = {k: v for k, v in params.to_dict().items() if k not in ("paths", "registry")}
    digest = hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()
    return f"kws-{digest[:8]}"


@dataclass(frozen=True)
class TuneResult:
    """Outcome of a study."""

    study_name: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    n_trials: int
    parent_run_id: str


def suggest(trial: Any, base: Params) -> Params:
    """Params of a trial: the head and training settings around the base configuration."""
    tree = base.to_dict()
    model, train = tree["model"], tree["train"]
    model["width"] = trial.suggest_categorical("width", [32, 64, 128])
    model["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    if model["architecture"] == "speech_embedding":  # its front end is fixed
        model["fine_tune"] = trial.suggest_int("fine_tune", 0, 2)
    else:
        tree["features"]["n_mels"] = trial.suggest_categorical("n_mels", [32, 40, 64])
    train["learning_rate"] = trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True)
    epochs = int(train["epochs"])  # around the base's, so a smoke config stays small
    train["epochs"] = trial.suggest_int("epochs", max(1, epochs // 2), max(1, epochs * 3 // 2))
    train["label_smoothing"] = trial.suggest_float("label_smoothing", 0.0, 0.2)
    return params_from_dict(tree, source=f"trial {trial.number}")


def pruning_callback(trial: Any) -> Any:
    """Keras callback: report val accuracy each epoch; stop training if Optuna prunes."""
    import keras

    class Pruning(keras.callbacks.Callback):
        pruned = False

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = (logs or {}).get("val_accuracy")
            if value is None:
                return
            trial.report(float(value), step=epoch + 1)
            if trial.should_prune():
                self.pruned = True
                self.model.stop_training = True

    return Pruning()


def shipped_graph(model: Any, params: Params, features: FeatureSet) -> bytes:
    """The TFLite graph `kws export` would write for this model (params.export)."""
    representative = None
    if params.export.quantization == "int8":  # calibrated on train-split clips, as export does
        x_train, _ = features.split("train")
        representative = representative_rows(
            x_train, params.export.representative_clips, params.seed
        )
    return to_tflite(model, params.export.quantization, representative)


def objective_factory(base: Params, experiment: str, parent_run_id: str, command: str = "") -> Any:
    """The Optuna objective over the prepared data (features cached per n_mels)."""
    import optuna  # heavy: only tuning needs it

    samples, info = load_prepared(base)
    labels = info["labels"]
    command_tag = {"kws_command": command} if command else {}

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, base)
        features = featurize_samples(
            samples, params.features, Path(params.paths.cache) / "features", info["data_hash"]
        )
        with tracking.training_run(
            params,
            info["data_hash"],
            experiment,
            run_name=f"trial-{trial.number}",
            parent_run_id=parent_run_id,
            tags={"optuna_trial": str(trial.number), **command_tag},
        ) as run:
            pruner = pruning_callback(trial)
            fitted = fit_and_score(
                features,
                labels,
                params,
                [run.epoch_callback(), pruner],
                cache_dir=Path(params.paths.cache) / "clips",
            )
            result, test = fitted.result, fitted.metrics
            value = max(result.history["val_accuracy"])
            run.log_metrics(
                {
                    "best_val_accuracy": value,
                    "test_accuracy": test["accuracy"],
                    "test_macro_f1": test["macro_f1"],
                    "train_seconds": result.seconds,
                }
            )
            if not pruner.pruned:  # what would ship: the exported graph, scored
                graph = shipped_graph(result.model, params, features)
                shipped = score_tflite(graph, labels, features, params.features)
                run.log_metrics(
                    {
                        "tflite_test_accuracy": shipped["accuracy"],
                        "tflite_test_macro_f1": shipped["macro_f1"],
                        "tflite_bytes": len(graph),
                    }
                )
                trial.set_user_attr("tflite_test_accuracy", shipped["accuracy"])
            run.client.set_tag(
                run.run_id, "optuna_state", "PRUNED" if pruner.pruned else "COMPLETE"
            )
        trial.set_user_attr("mlflow_run_id", run.run_id)
        trial.set_user_attr("test_accuracy", test["accuracy"])
        trial.set_user_attr("test_macro_f1", test["macro_f1"])
        trial.set_user_attr("train_seconds", result.seconds)
        if pruner.pruned:
            raise optuna.TrialPruned()
        return value

    return objective


def tune(
    params: Params,
    n_trials: int,
    storage: str,
    study_name: str,
    experiment: str,
    best_params_file: Path,
    plots_dir: Path,
    command: str = "",
) -> TuneResult:
    """Run (or resume) a study, then write the best params overlay and the plots."""
    import optuna  # heavy: only tuning needs it
    from mlflow.tracking import MlflowClient

    tracking.configure()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=params.seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3),
    )
    if command:  # every invocation that added trials, for the reports
        study.set_user_attr("commands", [*study.user_attrs.get("commands", []), command])
    client = MlflowClient()
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent is None:
        parent = client.create_run(
            tracking.experiment_id(experiment),
            run_name=f"study-{study_name}",
            tags={"optuna_study": study_name, "optuna_storage": storage},
        )
        parent = parent.info.run_id
        study.set_user_attr(PARENT_ATTR, parent)
    else:
        client.update_run(parent, status="RUNNING")
    try:
        study.optimize(
            objective_factory(params, experiment, parent, command),
            n_trials=n_trials,
            catch=(Exception,),
            show_progress_bar=True,
        )
    finally:
        client.set_terminated(parent, "FINISHED")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise KwsError(f"study {study_name!r} has no completed trial yet")
    best = study.best_trial
    write_best_params(params, best.params, best_params_file, study_name, best.number)
    save_plots(study, plots_dir, client, parent)
    client.log_metric(parent, "best_val_accuracy", float(best.value or 0.0))
    client.log_artifact(parent, str(best_params_file))
    client.set_tag(parent, "best_trial", str(best.number))
    return TuneResult(
        study_name,
        best.number,
        float(best.value or 0.0),
        dict(best.params),
        len(study.trials),
        parent,
    )


def write_best_params(
    base: Params, best: dict[str, Any], path: Path, study: str, number: int
) -> None:
    """The best trial as a params overlay (`kws train --overlay FILE`)."""

    class _Trial:  # replays the best values through the same search space
        def __init__(self) -> None:
            self.number = number

        def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> Any:
            return best[name]

        suggest_categorical = suggest_int = suggest_float

    tuned, untouched = suggest(_Trial(), base).flat(), base.flat()
    overlay: dict[str, Any] = {}
    for key, value in tuned.items():  # only what the search set: the rest stays params.yaml's
        if value != untouched[key]:
            section, name = key.split(".", 1)
            overlay.setdefault(section, {})[name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Best trial {number} of Optuna study {study!r} (written by `kws tune`).\n"
        f"# Use: kws train --overlay {path}\n"
    )
    path.write_text(header + yaml.safe_dump(overlay, sort_keys=False))


def save_plots(study: Any, folder: Path, client: Any, parent_run_id: str) -> list[Path]:
    """Optimisation history and parameter importances as PNG, also logged to MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    plots: dict[str, Any] = {"optuna_history.png": ovm.plot_optimization_history}
    if len([t for t in study.trials if t.value is not None]) >= 2:
        plots["optuna_importance.png"] = ovm.plot_param_importances
    for name, plot in plots.items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances of constant values
            log.warning("no %s: %s", name, exc)
            continue
        figure: Any = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
        client.log_artifact(parent_run_id, str(folder / name), "plots")
        written.append(folder / name)
    return written
