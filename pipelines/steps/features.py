"""Step: log-mel features of the prepared data (cached by data hash + feature params)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from zenml import step

from kws import stages
from kws.data.features import FEATURES_FILE
from kws_pipelines.steps.common import step_params


@step
def featurize(
    params: dict[str, Any], data_info: dict[str, Any]
) -> Annotated[dict[str, Any], "features"]:
    """Featurize; the file, its shape and the data hash are the step's output."""
    p = step_params(params)
    fs = stages.featurize(p)
    return {
        "file": str(Path(p.paths.features) / FEATURES_FILE),
        "shape": list(fs.x.shape),
        "skipped": len(fs.skipped),
        "data_hash": data_info["data_hash"],
    }
