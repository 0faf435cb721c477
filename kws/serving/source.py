"""Where the served model comes from: a package folder, the MLflow registry, or object storage."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kws.drift import DEFAULT_WINDOW, DriftWindow, read_reference
from kws.errors import KwsError, ModelPackageError
from kws.inference import Predictor

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")
_REMOTE_SCHEMES = ("s3://", "gs://", "runs:/", "mlflow-artifacts:/", "http://", "https://")


class ModelSourceError(KwsError):
    """A model URI cannot be understood or resolved."""


@dataclass(frozen=True)
class ModelRef:
    """Which model is served: registered name, version and the alias it was reached by."""

    name: str
    version: str
    alias: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready dict, as reported in every response."""
        return {"name": self.name, "version": self.version, "alias": self.alias}


@dataclass(frozen=True)
class LoadedModel:
    """A ready predictor and what it is."""

    predictor: Predictor
    ref: ModelRef
    source: str
    drift: DriftWindow | None = None  # None: the package has no drift reference


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """`models:/name@alias` or `models:/name/3` as (name, alias, version); None for other URIs."""
    match = _REGISTRY_URI.match(uri)
    if match is None:
        if uri.startswith("models:/"):
            raise ModelSourceError(
                f"{uri}: registry URIs look like models:/kws@champion or models:/kws/3"
            )
        return None
    return match["name"], match["alias"], match["version"]


def registry_version(uri: str) -> str | None:
    """The version a registry URI points to now (None if it is not a registry URI)."""
    parsed = parse_registry_uri(uri)
    if parsed is None:
        return None
    name, alias, version = parsed
    if version is not None:
        return version
    from kws.registry import Registry  # MLflow: only registry URIs need it

    found = Registry(name).alias_version(alias or "")
    if found is None:
        raise ModelSourceError(f"{uri}: model {name!r} has no alias {alias!r}")
    return found


def load(
    uri: str,
    default_name: str,
    num_threads: int | None = None,
    drift_window: int = DEFAULT_WINDOW,
) -> LoadedModel:
    """Resolve a model URI, fetch its package and load a predictor (warmed up) and, when the
    package has a drift reference, an empty drift window of drift_window requests."""
    parsed = parse_registry_uri(uri)
    with tempfile.TemporaryDirectory(prefix="kws-serve-") as scratch:
        # the predictor holds the model in memory, so downloads need not outlive loading
        if parsed is not None:
            name, alias, _ = parsed
            version = registry_version(uri) or ""
            package = _download_registered(name, version, Path(scratch))
            ref = ModelRef(name=name, version=version, alias=alias)
        elif uri.startswith(_REMOTE_SCHEMES):
            package = _download_artifacts(uri, Path(scratch))
            ref = ModelRef(name=default_name, version=_package_version(package), alias=None)
        else:
            package = Path(uri.removeprefix("file://"))
            if not package.exists():
                raise ModelSourceError(f"{uri}: no such model package folder")
            ref = ModelRef(name=default_name, version="local", alias=None)
        predictor = Predictor.from_path(package, num_threads=num_threads)
        reference = read_reference(Path(package))
    warm_up(predictor)
    drift = DriftWindow(reference, drift_window) if reference is not None else None
    return LoadedModel(predictor=predictor, ref=ref, source=uri, drift=drift)


def warm_up(predictor: Predictor) -> None:
    """Run one inference so the first request does not pay for lazy initialisation."""
    import numpy as np

    clip = np.zeros(predictor.features.clip_samples, dtype=np.float32)
    predictor.predict(clip)
    predictor.predict(clip[::2], sample_rate=predictor.features.sample_rate // 2)  # resampler


def _download_registered(name: str, version: str, target: Path) -> Path:
    from kws.registry import Registry  # MLflow: only registry URIs need it

    try:
        return Registry(name).download_package(version, target)
    except KwsError:
        raise
    except Exception as exc:
        raise ModelSourceError(f"models:/{name}/{version}: download failed ({exc})") from exc


def _download_artifacts(uri: str, target: Path) -> Path:
    """Download a package folder (or an MLflow model holding one) from an artifact URI."""
    import mlflow  # heavy: only remote package URIs need MLflow

    from kws.tracking import artifacts_through_the_server  # MLflow, as above

    artifacts_through_the_server()
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    except Exception as exc:
        raise ModelSourceError(f"{uri}: download failed ({str(exc).splitlines()[0]})") from exc
    for candidate in (root, root / "artifacts" / "package", root / "package"):
        if (candidate / "model.tflite").is_file():
            return candidate
    raise ModelPackageError(f"{uri}: no model package (model.tflite, labels.json) found there")


def _package_version(package: Path) -> str:
    """A remote package's own idea of its version: its MLflow run, else 'remote'."""
    import json

    meta = package / "metadata.json"
    if meta.is_file():
        run = json.loads(meta.read_text()).get("mlflow_run_id")
        if run:
            return f"run-{str(run)[:8]}"
    return "remote"
