"""What every step shares: typed params, the MLflow tracker of the stack, the run id tag."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zenml import get_step_context

from kws import tracking
from kws.errors import KwsError
from kws.params import Params, params_from_dict


class PipelineError(KwsError):
    """A pipeline run could not be started or did not succeed."""


def step_params(raw: dict[str, Any]) -> Params:
    """Typed params of a step; MLflow writes go to the stack's store, tagged with the run id."""
    from zenml.client import Client

    os.environ[tracking.PIPELINE_RUN_ENV] = str(get_step_context().pipeline_run.id)
    tracker: Any = Client().active_stack.experiment_tracker
    if tracker is not None and tracker.flavor == "mlflow":
        tracker.configure_mlflow()  # MLFLOW_TRACKING_URI (+ credentials) in every step's process
    return params_from_dict(raw, source="pipeline params")


def check_workspace(params: Params, mlflow_run_id: str) -> None:
    """Fail clearly if this step does not see the files the train step wrote."""
    found = tracking.load_run(Path(params.paths.model))
    if found is None or found.run_id != mlflow_run_id:
        raise PipelineError(
            f"{params.paths.model} does not hold the model of MLflow run {mlflow_run_id}: "
            "steps must share the project folder (see pipelines/README.md)"
        )
