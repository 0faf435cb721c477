"""MLflow model registry: the pyfunc wrapper, versions, champion/challenger aliases, gate."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from kws.errors import AudioError, KwsError
from kws.inference import Predictor

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "champion_history"
MODEL_ARTIFACT = "model"
PACKAGE_ARTIFACT = "package"  # the pyfunc artifact (and its folder) holding the model package


class RegistryError(KwsError):
    """A registry operation cannot be done (no such version, nothing to roll back to...)."""


class KwsPyfunc(PythonModel):
    """MLflow pyfunc over kws.inference.Predictor: WAV bytes or waveforms in, labels out."""

    def load_context(self, context: Any) -> None:
        """Load the model package shipped as an artifact."""
        from kws.inference import serve_single_threaded

        serve_single_threaded()
        self.predictor = Predictor.from_path(context.artifacts[PACKAGE_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """One row per clip: column `audio` (WAV bytes) or `waveform` + `sample_rate`."""
        rows = []
        for record in model_input.to_dict(orient="records"):
            try:
                prediction = self._predict_one(record)
            except AudioError as exc:
                from mlflow.exceptions import MlflowException
                from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
            probabilities = {t["label"]: t["probability"] for t in prediction.top_k}
            rows.append(
                {
                    "label": prediction.label,
                    "confidence": prediction.confidence,
                    "probabilities": json.dumps(probabilities),
                }
            )
        return pd.DataFrame(rows, columns=["label", "confidence", "probabilities"])

    def _predict_one(self, record: dict[str, Any]) -> Any:
        labels = len(self.predictor.labels)
        audio = record.get("audio")
        if isinstance(audio, bytes | bytearray) and audio:
            return self.predictor.predict(bytes(audio), top_k=labels)
        if isinstance(audio, str) and audio:
            return self.predictor.predict(base64.b64decode(audio), top_k=labels)
        waveform = record.get("waveform")
        if waveform is not None and len(waveform):
            rate_value = record.get("sample_rate")
            rate = (
                int(rate_value)
                if rate_value is not None and rate_value == rate_value
                else self.predictor.features.sample_rate
            )
            return self.predictor.predict(
                np.asarray(waveform, dtype=np.float32), rate, top_k=labels
            )
        raise AudioError("each row needs `audio` (WAV bytes) or `waveform` (+ `sample_rate`)")


def signature_and_example(example_wav: bytes) -> tuple[Any, pd.DataFrame]:
    """Model signature (audio bytes or waveform in; label, confidence, probabilities out)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    inputs = Schema(
        [
            ColSpec(DataType.binary, "audio", required=False),
            ColSpec(Array(DataType.double), "waveform", required=False),
            ColSpec(DataType.double, "sample_rate", required=False),  # NaN-able
        ]
    )
    outputs = Schema(
        [
            ColSpec(DataType.string, "label"),
            ColSpec(DataType.double, "confidence"),
            ColSpec(DataType.string, "probabilities"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs), pd.DataFrame({"audio": [example_wav]})


def log_pyfunc(run_id: str, package_dir: Path, example_wav: bytes) -> str:
    """Log the package as a pyfunc model in the run; return its model URI."""
    signature, example = signature_and_example(example_wav)
    with tempfile.TemporaryDirectory(prefix="kws-pyfunc-") as scratch:
        # MLflow stores an artifact folder under its own name (a pipeline's is a temporary
        # one): stage it as `package`, where download_package and every reader look
        staged = Path(scratch) / PACKAGE_ARTIFACT
        shutil.copytree(package_dir, staged)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=KwsPyfunc(),
                artifacts={PACKAGE_ARTIFACT: str(staged)},
                signature=signature,
                input_example=example,
                pip_requirements=[
                    "kws-mlops",
                    "mlflow",
                    "pandas",
                    "numpy",
                    "soundfile",
                    "soxr",
                    "ai-edge-litert",
                ],
            )
    return str(info.model_uri)


@dataclass(frozen=True)
class VersionInfo:
    """What `kws registry list` shows for a version."""

    version: str
    aliases: list[str]
    run_id: str
    tags: dict[str, str]
    created: str


class Registry:
    """Versions and aliases of one registered model."""

    def __init__(self, name: str) -> None:
        from mlflow.tracking import MlflowClient

        from kws.tracking import configure

        configure()
        self.name = name
        self.client = MlflowClient()

    def register(self, model_uri: str, tags: dict[str, str]) -> str:
        """Register a version, tag it, make it the challenger (and champion if none)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self.client.create_registered_model(self.name, description="Keyword spotting models")
        # mlflow.register_model resolves MLflow 3 logged-model URIs (models:/m-...) to the run
        version = mlflow.register_model(model_uri, self.name, tags=tags)
        number = str(version.version)
        self.client.set_registered_model_alias(self.name, CHALLENGER, number)
        if self.alias_version(CHAMPION) is None:
            self._set_champion(number, action="first version")
        return number

    def alias_version(self, alias: str) -> str | None:
        """Version an alias points to, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    def versions(self) -> list[VersionInfo]:
        """Every version, newest first."""
        found = list(self.client.search_model_versions(f"name='{self.name}'"))
        aliases: dict[str, list[str]] = {}
        if found:
            for alias, number in self.client.get_registered_model(self.name).aliases.items():
                aliases.setdefault(str(number), []).append(alias)
        infos = [
            VersionInfo(
                version=str(v.version),
                aliases=sorted(aliases.get(str(v.version), [])),
                run_id=v.run_id or "",
                tags=dict(v.tags),
                created=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(
                    timespec="seconds"
                ),
            )
            for v in found
        ]
        return sorted(infos, key=lambda v: int(v.version), reverse=True)

    def show(self, version: str) -> VersionInfo:
        """One version, or a clear error."""
        for info in self.versions():
            if info.version == str(version):
                return info
        raise RegistryError(f"model {self.name!r} has no version {version}")

    def history(self) -> list[dict[str, str]]:
        """Champion changes, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.name).tags
        except MlflowException:
            return []
        return list(json.loads(tags.get(HISTORY_TAG, "[]")))

    def promote(self, version: str) -> str | None:
        """Make version the champion; return the previous champion."""
        self.show(version)
        previous = self.alias_version(CHAMPION)
        if previous != str(version):
            self._set_champion(str(version), action="promote")
        if self.alias_version(CHALLENGER) == str(version):
            self.client.delete_registered_model_alias(self.name, CHALLENGER)
        return previous

    def rollback(self) -> str:
        """Return `champion` to the version before the last promotion still in force."""
        stack = self.champion_stack()
        if len(stack) < 2:
            raise RegistryError("no previous champion to roll back to")
        self._set_champion(stack[-2], action="rollback")
        return stack[-2]

    def champion_stack(self) -> list[str]:
        """Champions in promotion order, with rolled-back promotions removed."""
        stack: list[str] = []
        for entry in self.history():
            if entry["action"] == "rollback":
                if stack:
                    stack.pop()
            else:
                stack.append(entry["version"])
        return stack

    def _set_champion(self, version: str, action: str) -> None:
        previous = self.alias_version(CHAMPION)
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        entry = {
            "version": version,
            "previous": previous or "",
            "action": action,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        history = [*self.history(), entry][-40:]  # tag values are size-limited
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))
        log.info("champion: v%s (was %s, %s)", version, previous or "none", action)

    def download_package(self, version: str, dest: Path | None = None) -> Path:
        """The model package of a version, downloaded (cached per version)."""
        self.show(version)
        target = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{self.name}/{version}",
                dst_path=str(dest) if dest else None,
            )
        )
        return target / package_path(target)


def package_path(model_dir: Path) -> str:
    """Where a downloaded pyfunc model keeps the package, as its MLmodel file records it
    (versions a pipeline registered before the package was staged as `package` differ)."""
    import yaml

    try:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
        return str(mlmodel["flavors"]["python_function"]["artifacts"][PACKAGE_ARTIFACT]["path"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return f"artifacts/{PACKAGE_ARTIFACT}"


@dataclass(frozen=True)
class GateDecision:
    """What `kws registry gate` decided and why."""

    promoted: bool
    champion: str
    challenger: str
    champion_accuracy: float
    challenger_accuracy: float
    margin: float

    @property
    def reason(self) -> str:
        """One sentence a person can read in CI logs."""
        delta = self.challenger_accuracy - self.champion_accuracy
        verdict = "promoted" if self.promoted else "kept champion"
        return (
            f"{verdict}: challenger v{self.challenger} accuracy "
            f"{self.challenger_accuracy:.4f} vs champion v{self.champion} "
            f"{self.champion_accuracy:.4f} (gain {delta:+.4f}, margin {self.margin:.4f})"
        )


def gate(registry: Registry, samples: list[Any], margin: float) -> GateDecision:
    """Evaluate challenger and champion on the same samples; promote a clearly better one."""
    from kws.evaluate import evaluate_samples

    champion, challenger = registry.alias_version(CHAMPION), registry.alias_version(CHALLENGER)
    if champion is None or challenger is None:
        raise RegistryError(
            f"gate needs both aliases (champion: {champion or 'none'}, "
            f"challenger: {challenger or 'none'})"
        )
    if champion == challenger:
        raise RegistryError(f"champion and challenger are the same version ({champion})")
    accuracy = {
        version: evaluate_samples(Predictor.from_path(registry.download_package(version)), samples)[
            "accuracy"
        ]
        for version in (champion, challenger)
    }
    promoted = accuracy[challenger] >= accuracy[champion] + margin
    if promoted:
        registry.promote(challenger)
    return GateDecision(
        promoted, champion, challenger, accuracy[champion], accuracy[challenger], margin
    )
