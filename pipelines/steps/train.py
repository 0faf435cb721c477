"""Step: seeded training tracked as an MLflow run (the stack's experiment tracker, if any)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from zenml import get_step_context, log_metadata, step

from kws import stages, tracking
from kws_pipelines.steps.common import PipelineError, step_params

TRAIN_STEP = "train_model"


@step
def train_model(
    params: dict[str, Any], features: dict[str, Any]
) -> tuple[Annotated[str, "mlflow_run_id"], Annotated[dict[str, list[float]], "history"]]:
    """Train; the MLflow run id and the per-epoch history are the step's outputs."""
    p = step_params(params)
    result = stages.train(p, run_name=get_step_context().pipeline_run.name)
    mlrun = tracking.load_run(Path(p.paths.model))
    if mlrun is None:
        raise PipelineError("training left no MLflow run")
    log_metadata({"mlflow_run_id": mlrun.run_id, "train_seconds": result.seconds})
    return mlrun.run_id, result.history
