"""Step: register the package as a new version of the model (alias challenger)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from zenml import get_step_context, log_metadata, step

from kws import stages, tracking
from kws_pipelines.steps.common import step_params


@step
def register(
    params: dict[str, Any], mlflow_run_id: str, model_package: Path
) -> Annotated[str, "model_version"]:
    """Register the package export wrote (model_package, ZenML's copy of it, orders the steps);
    the version, run and store are logged as metadata of the pipeline run."""
    p = step_params(params)
    version = stages.register(p)
    log_metadata(
        metadata={
            "mlflow_run_id": mlflow_run_id,
            "mlflow_experiment": p.registry.experiment,
            "model_name": p.registry.model_name,
            "model_version": version,
            "mlflow_tracking_uri": tracking.tracking_uri(),
        },
        run_id_name_or_prefix=get_step_context().pipeline_run.id,
    )
    return version
