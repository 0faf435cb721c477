"""Step: the model package (TFLite, Keras, labels, features, metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from zenml import step

from kws import stages
from kws_pipelines.steps.common import check_workspace, step_params


@step
def export(
    params: dict[str, Any], mlflow_run_id: str, metrics: dict[str, Any]
) -> Annotated[Path, "model_package"]:
    """Export the package; registering it is the next step."""
    p = step_params(params)
    check_workspace(p, mlflow_run_id)
    return stages.export(p).resolve()
