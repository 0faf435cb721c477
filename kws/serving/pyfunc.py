"""The MLflow pyfunc flavour of a model package (`mlflow models serve`, `mlflow.pyfunc.load_model`).

Logged as MLflow "models from code": kws.registry hands MLflow this file's path, and MLflow
runs it at load time, where `set_model` names the model. Rows are decoded and checked by
the same decoder as the inference service's routes.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from kws.errors import KwsError
from kws.inference import Predictor, serve_single_threaded
from kws.serving import decode

OUTPUT_COLUMNS = ["label", "confidence", "probabilities"]


class KwsPyfunc(PythonModel):
    """WAV bytes or waveforms in (one row per clip); label, confidence, probabilities out."""

    def load_context(self, context: Any) -> None:
        """Load the model package shipped as the `package` artifact."""
        serve_single_threaded()
        self.predictor = Predictor.from_path(context.artifacts["package"])
        self.limits = decode.Limits()

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """One output row per input row; bad input is MLflow's INVALID_PARAMETER_VALUE."""
        rows = []
        for row in model_input.to_dict(orient="records"):
            try:
                wave, rate = decode.checked(decode.record(row), self.limits)
                prediction = self.predictor.predict(wave, rate)
            except KwsError as exc:
                from mlflow.exceptions import MlflowException
                from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
            rows.append(
                {
                    "label": prediction.label,
                    "confidence": prediction.confidence,
                    "probabilities": json.dumps(prediction.probabilities),
                }
            )
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


mlflow.models.set_model(KwsPyfunc())
