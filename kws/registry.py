"""MLflow model registry: registering packages as versions, champion/challenger aliases and
their history (promotion and rollback)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from kws import tracking
from kws.errors import KwsError
from kws.package import is_package, read_metadata

log = logging.getLogger(__name__)
# The pyfunc flavour's code, handed to MLflow as a file ("models from code"): the serving
# adapter is not imported here, MLflow runs the file where the model is loaded.
PYFUNC_CODE = Path(__file__).resolve().parent / "serving" / "pyfunc.py"
CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "champion_history"
MODEL_ARTIFACT = "model"
PACKAGE_ARTIFACT = "package"  # the pyfunc artifact (and its folder) holding the model package


class RegistryError(KwsError):
    """A registry operation cannot be done (no such version, nothing to roll back to...)."""


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
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(PYFUNC_CODE),
            artifacts={PACKAGE_ARTIFACT: str(package_dir)},
            signature=signature,
            input_example=example,
            pip_requirements=[
                "kws-mlops",
                "mlflow",
                "pandas",
                "numpy",
                "soxr",
                "soundfile",
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

        tracking.configure()
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
        # MLflow keeps the `package` artifact under artifacts/, named after the folder logged
        found = [d for d in sorted((Path(target) / "artifacts").glob("*")) if is_package(d)]
        if not found:
            raise RegistryError(f"version {version} of {self.name!r} holds no model package")
        return found[0]


def register_package(package: Path, model_name: str, example_wav: bytes) -> str:
    """Log a package (trained in a tracked run: its metadata.json) as a pyfunc model and
    register it as a new version tagged with its metrics, code, data and params."""
    metadata = read_metadata(package)
    if not metadata:
        raise RegistryError(f"no model package in {package} (run `kws export` first)")
    run_id = metadata.get("mlflow_run_id")
    if not run_id:
        raise RegistryError(
            f"{package} was not trained in a tracked MLflow run: nothing to register"
        )
    tracking.configure()
    model_uri = log_pyfunc(run_id, package, example_wav)
    tags = {
        "data_hash": str(metadata["data_hash"]),
        "git_commit": str(metadata["git_commit"]),
        "params_hash": str(metadata["params_hash"]),
        "architecture": str(metadata.get("architecture", "")),
        **{k: str(v) for k, v in metadata.get("metrics", {}).items()},
    }
    if os.environ.get(tracking.PIPELINE_RUN_ENV):
        tags["pipeline_run_id"] = os.environ[tracking.PIPELINE_RUN_ENV]
    return Registry(model_name).register(model_uri, tags)
