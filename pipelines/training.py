"""ZenML training pipeline: load data → featurize → train → evaluate → export → register.

Every step only calls `kws` functions. The parameters travel as the resolved params
dict (a pipeline parameter, so ZenML records it with the run); files move between
steps through the project folder (`params.paths`), exactly as the CLI and DVC stages
use them, and the step outputs (data summary, MLflow run id, metrics, the model
package, the registered version) are ZenML artifacts.

Linking: each step sets KWS_PIPELINE_RUN_ID to the ZenML run id, which kws.tracking
writes as the `pipeline_run_id` tag of the MLflow run (and kws.export on the registered
version); the register step logs the MLflow run id and model version as metadata of the
ZenML run. A failing step fails the ZenML run, marks the run's MLflow run FAILED (hook)
and, the register step being last, registers nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zenml import get_step_context, pipeline

from kws import tracking
from kws.errors import KwsError
from kws.params import Params
from kws_pipelines.config import ROOT, kubernetes_settings, resolve_config
from kws_pipelines.steps.common import PipelineError
from kws_pipelines.steps.data import load_data
from kws_pipelines.steps.evaluate import evaluate
from kws_pipelines.steps.export import export
from kws_pipelines.steps.features import featurize
from kws_pipelines.steps.register import register
from kws_pipelines.steps.train import TRAIN_STEP, train_model

log = logging.getLogger(__name__)

PIPELINE_NAME = "kws_training"


def mark_mlflow_run_failed(exception: BaseException) -> None:
    """Failure hook: the MLflow run of this pipeline run (if training started) becomes FAILED."""
    context = get_step_context()
    raw = context.step_run.config.parameters.get("params") or {}
    model_dir = Path(raw.get("paths", {}).get("model", "models/train"))
    try:
        failed = tracking.mark_failed(model_dir, str(context.pipeline_run.id))
    except Exception as exc:  # the hook must not hide the step's own error
        log.warning("could not mark the MLflow run FAILED: %s", exc)
        return
    if failed:
        log.info("MLflow run %s marked FAILED (%s)", failed, type(exception).__name__)


@pipeline(name=PIPELINE_NAME, enable_cache=False, on_failure=mark_mlflow_run_failed)
def training_pipeline(params: dict[str, Any]) -> None:
    """data → features → train → evaluate → export → register."""
    data_info = load_data(params)
    features = featurize(params, data_info)
    mlflow_run_id, _history = train_model(params, features)
    metrics = evaluate(params, mlflow_run_id)
    package = export(params, mlflow_run_id, metrics)
    register(params, mlflow_run_id, package)


@dataclass(frozen=True)
class PipelineOutcome:
    """What a finished run produced, as both systems know it."""

    run_id: str
    run_name: str
    status: str
    mlflow_run_id: str | None
    model_name: str | None
    model_version: str | None


def run_pipeline(
    config: str | Path,
    params_file: Path = Path("params.yaml"),
    overrides: list[str] | None = None,
    overlays: list[Path] | None = None,
) -> PipelineOutcome:
    """Run the training pipeline on the active ZenML stack with a named run config."""
    from zenml.client import Client
    from zenml.utils import source_utils

    path, params = resolve_config(config, params_file, overrides, overlays)
    stack = Client().active_stack
    options: dict[str, Any] = {}
    tracker = stack.experiment_tracker
    if tracker is not None and tracker.flavor == "mlflow":
        _prepare_experiment(tracker, params)
        options["steps"] = {
            TRAIN_STEP: {
                "experiment_tracker": tracker.name,
                "settings": {
                    "experiment_tracker.mlflow": {"experiment_name": params.registry.experiment}
                },
            }
        }
    if stack.orchestrator.flavor == "kubernetes":
        options["settings"] = kubernetes_settings()
    # step sources resolve against the checkout (the console script's folder is .venv/bin)
    source_utils.set_custom_source_root(str(ROOT))
    log.info("pipeline %s on stack %r with %s", PIPELINE_NAME, stack.name, path)
    try:
        response = training_pipeline.with_options(config_path=str(path), **options)(
            params=params.to_dict()
        )
    except KwsError:
        raise
    except Exception as exc:
        raise PipelineError(_failure_message(exc)) from exc
    if response is None:
        raise PipelineError("the orchestrator returned no pipeline run")
    result = outcome(str(response.id))
    if result.status == "failed":  # orchestrators that report instead of raising
        raise PipelineError(_failure_message(RuntimeError(f"run {result.run_name} failed")))
    return result


def outcome(run_id: str) -> PipelineOutcome:
    """The run's status and the MLflow run and model version logged on it."""
    from zenml.client import Client

    run = Client().get_pipeline_run(run_id)
    metadata = run.run_metadata
    return PipelineOutcome(
        run_id=str(run.id),
        run_name=run.name,
        status=str(run.status.value),
        mlflow_run_id=_str_or_none(metadata.get("mlflow_run_id")),
        model_name=_str_or_none(metadata.get("model_name")),
        model_version=_str_or_none(metadata.get("model_version")),
    )


def _prepare_experiment(tracker: Any, params: Params) -> None:
    """Create the MLflow experiment as kws does (project artifact folder) before ZenML does.

    Also checks an MLflow server is reachable before any step starts.
    """
    uri = tracker.get_tracking_uri()
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        tracking.configure()
        tracking.experiment_id(params.registry.experiment)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def _failure_message(exc: BaseException) -> str:
    """One line: which run failed at which step, and why."""
    from zenml.client import Client

    try:
        run = (
            Client()
            .list_pipeline_runs(pipeline_name=PIPELINE_NAME, sort_by="desc:created", size=1)
            .items[0]
        )
        failed = [s for s in run.steps.values() if s.status.value == "failed"]
    except Exception:  # the store is not readable: the orchestrator's error will do
        return f"pipeline run failed: {_one_line(exc)}"
    if not failed or failed[0].exception_info is None:
        return f"pipeline run {run.name} {run.status.value}: {_one_line(exc)}"
    step = failed[0]
    info = step.exception_info
    message = (info.message or "").strip().splitlines() if info else []
    return (
        f"pipeline run {run.name} failed at step {step.name}: "
        f"{message[-1] if message else _one_line(exc)}"
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")
