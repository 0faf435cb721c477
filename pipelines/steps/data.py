"""Step: fetch (verified) and split the dataset — the DVC `fetch` + `prepare` stages."""

from __future__ import annotations

from typing import Annotated, Any

from zenml import step

from kws import stages
from kws_pipelines.steps.common import step_params


@step
def load_data(params: dict[str, Any]) -> Annotated[dict[str, Any], "data_info"]:
    """Fetch and prepare the data; the data summary is the step's output."""
    p = step_params(params)
    stages.fetch(p)
    _, info = stages.prepare(p)
    return info
