"""The promotion gate: a challenger replaces the champion only if it is clearly better on
the same unseen speaker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kws.evaluate import evaluate_samples
from kws.inference import Predictor
from kws.registry import CHALLENGER, CHAMPION, Registry, RegistryError


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
