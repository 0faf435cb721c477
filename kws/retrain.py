"""Continuous training: retrain when a condition holds, register a challenger, let the
promotion gate decide, and optionally propose a canary for a promoted model.

`kws retrain --when drift|schedule|always` is the one entry (the CI `ct-smoke` schedule runs
`--when schedule`). Nothing is deployed: a canary weight is written into a deploy values file
(a numbered revision, as `kws deploy set-weights` records it) for a person or GitOps to apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from kws import deploy
from kws.errors import KwsError
from kws.monitoring import read_drift
from kws.params import Params


class When(StrEnum):
    """What makes a retraining run."""

    drift = "drift"  # a drift score above its threshold (Prometheus or a predictor's /metrics)
    schedule = "schedule"  # the caller is a schedule (cron, CI): always due
    always = "always"


@dataclass(frozen=True)
class Outcome:
    """What a retrain call did and why."""

    when: str
    retrained: bool
    reason: str
    version: str | None = None  # the registered challenger
    promoted: bool = False
    decision: dict[str, Any] | None = None
    canary: str | None = None  # the deploy values line written, if any

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the retrain report)."""
        return asdict(self)


def due(when: When, drift_source: str | None) -> tuple[bool, str]:
    """Whether to retrain now, and why."""
    if when is When.always:
        return True, "always"
    if when is When.schedule:
        return True, "scheduled run"
    if not drift_source:
        raise KwsError("--when drift needs --drift-source (a /metrics URL or Prometheus URL)")
    reading = read_drift(drift_source)
    if not reading.scored:
        return False, f"no drift score yet (drift window filling: {reading.window or 0:.0f})"
    if reading.drifted:
        return True, f"drift in {', '.join(reading.drifted)}"
    return False, "no drift"


def train_and_register(params: Params) -> str:
    """The training pipeline on the current data, registered as a new version (challenger)."""
    from kws import stages  # TensorFlow + MLflow: only once retraining is due

    stages.fetch(params)
    stages.prepare(params)
    stages.featurize(params)
    stages.train(params)
    stages.evaluate(params)
    stages.export(params)
    return stages.register(params)


def propose_canary(values_file: Path, state: Path, version: str, model: str, weight: int) -> str:
    """Write a canary of `weight`% for a registered version into a deploy values file.

    The new entry `v<version>` takes its share from the version carrying the most traffic;
    the change is recorded as a deploy revision, never applied.
    """

    def add_canary(values: dict[str, Any]) -> dict[str, Any]:
        name = f"v{version}"
        entries = [dict(e) for e in values["versions"] if e["name"] != name]
        if not entries:
            raise deploy.DeployError(f"{values_file}: no other version to take traffic from")
        donor = max(entries, key=lambda e: int(e["weight"]))
        if int(donor["weight"]) < weight:
            raise deploy.DeployError(
                f"canary {weight}%: {donor['name']} carries only {donor['weight']}%"
            )
        donor["weight"] = int(donor["weight"]) - weight
        return {**values, "versions": [*entries, {"name": name, "model": model, "weight": weight}]}

    revision = deploy.change_file(
        values_file, state, add_canary, f"Canary v{version} at {weight}% (kws retrain)"
    )
    return f"revision {revision.number}: {deploy.describe(revision.values)}"


def retrain(
    params: Params,
    when: When,
    drift_source: str | None = None,
    canary_weight: int = 0,
    values_file: Path | None = None,
    state: Path = Path(".cache/deploy"),
    run_pipeline: Callable[[Params], str] = train_and_register,
) -> Outcome:
    """Check the condition; if due, train, register, gate, and propose a canary if promoted."""
    if canary_weight and values_file is None:
        raise KwsError("--canary-weight needs --values (the deploy values file to write)")
    if not 0 <= canary_weight <= 100:
        raise KwsError(f"--canary-weight must be 0-100, got {canary_weight}")
    go, reason = due(when, drift_source)
    if not go:
        return Outcome(when.value, False, reason)
    # loaded only once retraining is due, so a check that finds nothing to do stays light
    from kws import stages  # TensorFlow + MLflow
    from kws.promotion import gate  # MLflow + evaluation
    from kws.registry import CHAMPION, Registry  # MLflow

    registry = Registry(params.registry.model_name)
    version = run_pipeline(params)
    if registry.alias_version(CHAMPION) == version:  # the first version: nothing to beat
        return Outcome(when.value, True, reason, version, True, None)
    samples, _ = stages.prepare(params)
    decision = gate(
        registry, [s for s in samples if s.split == "test"], params.registry.gate_margin
    )
    canary = None
    if decision.promoted and canary_weight and values_file is not None:
        canary = propose_canary(
            values_file, state, version, f"models:/{registry.name}/{version}", canary_weight
        )
    return Outcome(
        when.value,
        True,
        reason,
        version,
        decision.promoted,
        {**asdict(decision), "reason": decision.reason},
        canary,
    )
