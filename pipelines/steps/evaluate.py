"""Step: accuracy, macro-F1 and per-class scores on the test split (logged to the run)."""

from __future__ import annotations

from typing import Annotated, Any

from zenml import log_metadata, step

from kws import stages
from kws_pipelines.steps.common import check_workspace, step_params


@step
def evaluate(params: dict[str, Any], mlflow_run_id: str) -> Annotated[dict[str, Any], "metrics"]:
    """Evaluate the model of this run's training."""
    p = step_params(params)
    check_workspace(p, mlflow_run_id)
    metrics = stages.evaluate(p)
    log_metadata({"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]})
    return metrics
