"""Leave-one-speaker-out cross-validation: the honest number for unseen speakers."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kws.data import fetch, prepare
from kws.data.features import FeatureSet, featurize_samples
from kws.data.synthetic import is_synthetic
from kws.evaluate import fit_and_score, top_confusions
from kws.params import Params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeakerFolds:
    """The features of a whole dataset and, per real speaker, a fold that holds it out."""

    features: FeatureSet
    labels: list[str]
    speakers: list[str]  # the real (not synthetic) speakers, each one fold's test split
    row_speakers: np.ndarray  # the speaker of every feature row

    def fold(self, speaker: str) -> FeatureSet:
        """The speaker's clips as the test split, everyone else's as train (no val)."""
        return dataclasses.replace(
            self.features, splits=np.where(self.row_speakers == speaker, "test", "train")
        )


def speaker_folds(params: Params) -> SpeakerFolds:
    """Fetch, prepare and featurize the data (cached), ready to be cut into LOSO folds."""
    fetch(params)
    samples, info = prepare(params)
    cache = Path(params.paths.cache)
    features = featurize_samples(samples, params.features, cache / "features", info["data_hash"])
    speaker_of = {s.path: s.speaker for s in samples}
    row_speakers = np.array([speaker_of[p] for p in features.paths])
    real = sorted({s for s in row_speakers if not is_synthetic(s)})
    return SpeakerFolds(features, info["labels"], real, row_speakers)


def cross_validate(params: Params, speakers: Sequence[str] | None = None) -> dict[str, Any]:
    """One model per held-out speaker, trained on all the others; per-fold and mean scores.

    Folds have no val split (the held-out speaker is never used for selection), so
    each runs the full training schedule. Synthetic speakers are never held out.
    """
    folds = speaker_folds(params)
    cache = Path(params.paths.cache)
    scores: dict[str, dict[str, Any]] = {}
    for speaker in speakers or folds.speakers:
        fitted = fit_and_score(folds.fold(speaker), folds.labels, params, cache_dir=cache / "clips")
        m = fitted.metrics
        scores[speaker] = {
            "accuracy": round(m["accuracy"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "n": m["n"],
            "top_confusions": top_confusions(m["confusion_matrix"], folds.labels),
            "train_seconds": round(fitted.result.seconds, 1),
            "parameters": int(fitted.result.model.count_params()),
        }
        log.info("held-out %s: accuracy %.4f, macro-F1 %.4f", speaker, m["accuracy"], m["macro_f1"])
    accuracies = [f["accuracy"] for f in scores.values()]
    return {
        "folds": scores,
        "mean_accuracy": round(float(np.mean(accuracies)), 4),
        "min_accuracy": round(float(np.min(accuracies)), 4),
        "mean_macro_f1": round(float(np.mean([f["macro_f1"] for f in scores.values()])), 4),
        "params_hash": params.digest(),
    }
