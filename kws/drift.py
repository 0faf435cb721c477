"""Drift of the audio a model is sent, and of what it answers, against its package's reference.

Every request is summarised by a few statistics of its decoded waveform (duration, RMS level,
spectral centroid, spectral flatness) and of the prediction (top-1 confidence, label). At
export time the same statistics of the training data are binned into the package's
`reference.json`; the predictor bins the last N requests the same way and scores each
statistic with the population stability index:

    PSI = sum over bins of (p_window - p_reference) * ln(p_window / p_reference)

where p are bin proportions floored at EPSILON = 0.01 (an empty bin would otherwise be
infinitely surprising; 0.01 is one request in a window of 100). PSI is 0 for identical
histograms; by the usual reading < 0.1 is no shift, 0.1-0.2 a moderate one, and above
INPUT_THRESHOLD = 0.2 an input statistic has drifted. The two prediction statistics have a
higher threshold, PREDICTION_THRESHOLD = 0.5: a model's confidence and its label mix move
with the speaker even on clean audio (a tiny model measured 0.37 and 0.26 on the clean clips
of an unseen FSDD speaker against its validation speaker), while every shift worth an alarm
also moves an input statistic. The thresholds are exported with the scores
(`kws_drift_threshold`), so alerting rules compare the two series and hold no numbers.

Bins are fixed, in physical units (`STATISTICS`), and deliberately wide: the speakers and
microphones of one dataset already differ by more than a narrow bin (FSDD's five speakers
span 14 dB of level and 0.3 s of duration), so quantile bins of the reference flag every
new speaker; a 20 dB level bin does not, yet a -20 dB gain moves most clips one bin down.
The label statistic is categorical (one bin per label).

Reference sources: the input statistics come from the train and validation clips (what the
model was built for, the recordings themselves, no augmentation); confidence and the
predicted-label distribution from the model's predictions on the validation split (on
training clips the model is over-confident). The test split is never used.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kws.errors import ModelPackageError
from kws.package import REFERENCE_FILE

INPUT_THRESHOLD = 0.2
PREDICTION_THRESHOLD = 0.5
EPSILON = 0.01
DEFAULT_WINDOW = 200  # requests in the rolling window
MIN_REQUESTS = 50  # below this many requests in the window, no score is reported
FRAME_SECONDS = 0.025
LABEL = "label"
CONFIDENCE = "confidence"


@dataclass(frozen=True)
class Statistic:
    """A binned per-request statistic: bins are (-inf, e0), [e0, e1), ..., [e_last, inf)."""

    name: str
    edges: tuple[float, ...]
    description: str

    def bin_of(self, value: float) -> int:
        """Index of the bin holding value."""
        return int(np.searchsorted(self.edges, value, side="right"))

    @property
    def n_bins(self) -> int:
        """How many bins the edges make."""
        return len(self.edges) + 1


STATISTICS = (
    Statistic(
        "duration_seconds",
        (0.2, 1.0, 2.0, 4.0, 8.0),
        "length of the decoded audio (a word: 0.2-1 s; then octave bins)",
    ),
    Statistic(
        "rms_dbfs",
        (-80.0, -60.0, -40.0, -20.0),
        "RMS level of the whole clip in dB full scale (20 dB bins)",
    ),
    Statistic(
        "spectral_centroid_hz",
        (250.0, 354.0, 500.0, 707.0, 1000.0, 1414.0, 2000.0, 2828.0),
        "power-weighted mean frequency of the clip (half-octave bins from 250 Hz)",
    ),
    Statistic(
        "spectral_flatness_db",
        (-30.0, -25.0, -20.0, -15.0, -10.0, -5.0),
        "geometric over arithmetic mean of the power spectrum, in dB (0 dB: white noise)",
    ),
    Statistic(
        CONFIDENCE,
        (0.2, 0.4, 0.6, 0.8, 0.9),
        "top-1 probability of the prediction",
    ),
)
INPUT_STATISTICS = tuple(s for s in STATISTICS if s.name != CONFIDENCE)
STATISTIC_NAMES = (*(s.name for s in STATISTICS), LABEL)
THRESHOLDS = {
    **{s.name: INPUT_THRESHOLD for s in INPUT_STATISTICS},
    CONFIDENCE: PREDICTION_THRESHOLD,
    LABEL: PREDICTION_THRESHOLD,
}


def input_statistics(wave: np.ndarray, rate: int) -> dict[str, float]:
    """Duration, RMS level, spectral centroid and flatness of a mono waveform at its own rate."""
    samples = np.asarray(wave, dtype=np.float32).reshape(-1)  # float32: half the FFT's time
    spectrum = np.fft.rfft(samples)
    power = np.square(spectrum.real, dtype=np.float64) + np.square(spectrum.imag, dtype=np.float64)
    total = float(power.sum())
    rms = math.sqrt(float(np.dot(samples, samples)) / samples.size) if samples.size else 0.0
    tiny = 1e-20  # digital silence: a finite, very low level instead of -inf
    hz_per_bin = rate / samples.size if samples.size else 0.0
    centroid = float(power @ np.arange(power.size)) * hz_per_bin / total if total > 0 else 0.0
    geometric_mean = math.exp(float(np.mean(np.log(power + tiny))))
    return {
        "duration_seconds": samples.size / rate,
        "rms_dbfs": 20 * math.log10(max(rms, 1e-10)),
        "spectral_centroid_hz": centroid,
        "spectral_flatness_db": 10
        * math.log10(max(geometric_mean / (float(power.mean()) + tiny), tiny)),
    }


def proportions(counts: Sequence[float], epsilon: float = EPSILON) -> np.ndarray:
    """Bin proportions of counts, floored at epsilon."""
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    share = array / total if total > 0 else np.full(array.shape, 1.0 / max(array.size, 1))
    return np.maximum(share, epsilon)


def psi(reference: Sequence[float], current: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index of two histograms over the same bins (counts)."""
    if len(reference) != len(current):
        raise ValueError(f"histograms differ in bins: {len(reference)} vs {len(current)}")
    ref, cur = proportions(reference, epsilon), proportions(current, epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


@dataclass(frozen=True)
class Reference:
    """Binned statistics of the data a model was built for (the package's reference.json).

    It carries its own bin edges, so a package keeps being scored as it was exported even if
    a later kws bins differently.
    """

    edges: dict[str, tuple[float, ...]]  # numeric statistic -> bin edges
    counts: dict[str, list[int]]  # statistic -> counts per bin (label: per label)
    labels: list[str]
    sources: dict[str, str]  # statistic -> where its values came from

    @property
    def names(self) -> tuple[str, ...]:
        """The statistics this reference scores, in report order."""
        return tuple(name for name in STATISTIC_NAMES if name in self.counts)

    def bin_of(self, name: str, value: float) -> int:
        """Bin index of a value of a numeric statistic."""
        return int(np.searchsorted(self.edges[name], value, side="right"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the bins spelled out, readable without this module."""
        stats: dict[str, Any] = {
            name: {
                "edges": list(self.edges[name]),
                "counts": self.counts[name],
                "source": self.sources.get(name, ""),
            }
            for name in self.edges
        }
        stats[LABEL] = {
            "labels": self.labels,
            "counts": self.counts[LABEL],
            "source": self.sources.get(LABEL, ""),
        }
        return {"measure": "psi", "epsilon": EPSILON, "statistics": stats}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        """Read back to_dict's output (statistics this kws does not know are ignored)."""
        try:
            stats = data["statistics"]
            known = [name for name in STATISTIC_NAMES if name in stats]
            edges = {
                name: tuple(float(e) for e in stats[name]["edges"])
                for name in known
                if name != LABEL
            }
            counts = {name: [int(c) for c in stats[name]["counts"]] for name in known}
            labels = [str(label) for label in stats[LABEL]["labels"]] if LABEL in stats else []
            sources = {name: str(stats[name].get("source", "")) for name in known}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelPackageError(f"malformed drift reference ({exc})") from exc
        for name, bins in edges.items():
            if len(counts[name]) != len(bins) + 1 or list(bins) != sorted(bins):
                raise ModelPackageError(f"malformed drift reference ({name}: bins and counts)")
        if len(counts.get(LABEL, [])) != len(labels):
            raise ModelPackageError("malformed drift reference (label: labels and counts)")
        return cls(edges, counts, labels, sources)


def build_reference(
    inputs: Iterable[Mapping[str, float]],
    confidences: Iterable[float],
    predicted: Iterable[str],
    labels: Sequence[str],
    sources: Mapping[str, str],
) -> Reference:
    """The reference of input statistics (one dict per clip) and of predictions."""
    counts = {s.name: [0] * s.n_bins for s in STATISTICS}
    for row in inputs:
        for s in INPUT_STATISTICS:
            counts[s.name][s.bin_of(row[s.name])] += 1
    confidence = next(s for s in STATISTICS if s.name == CONFIDENCE)
    for value in confidences:
        counts[CONFIDENCE][confidence.bin_of(value)] += 1
    index = {label: i for i, label in enumerate(labels)}
    counts[LABEL] = [0] * len(labels)
    for label in predicted:
        counts[LABEL][index[label]] += 1
    return Reference(
        {s.name: s.edges for s in STATISTICS},
        counts,
        list(labels),
        {name: sources.get(name, "") for name in STATISTIC_NAMES},
    )


def write_reference(reference: Reference, folder: Path) -> Path:
    """Write reference.json into a package folder."""
    path = folder / REFERENCE_FILE
    path.write_text(json.dumps(reference.to_dict(), indent=2) + "\n")
    return path


def read_reference(folder: Path) -> Reference | None:
    """A package's drift reference, or None for packages exported before drift monitoring."""
    path = folder / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ModelPackageError(f"{path}: not valid JSON ({exc})") from exc
    return Reference.from_dict(data)


class DriftWindow:
    """The last `size` requests, binned, and their PSI against a reference (thread-safe).

    Each request adds its bin indices; the oldest falls out of the counts when the window is
    full, so adding and scoring cost a few integer operations, whatever the window size.
    """

    def __init__(
        self, reference: Reference, size: int = DEFAULT_WINDOW, min_requests: int = MIN_REQUESTS
    ) -> None:
        if size < 1 or min_requests < 1:
            raise ValueError("the drift window and its minimum fill must be at least 1")
        self.reference = reference
        self.size = size
        self.min_requests = min(min_requests, size)
        self.names = reference.names
        self._label_index = {label: i for i, label in enumerate(reference.labels)}
        self._bins: deque[tuple[int, ...]] = deque()
        self._counts = {name: [0] * len(reference.counts[name]) for name in self.names}
        self._lock = threading.Lock()

    def add(self, inputs: Mapping[str, float], confidence: float, label: str) -> None:
        """Count one request (its input statistics and its prediction)."""
        values = {**inputs, CONFIDENCE: confidence}
        bins = tuple(
            # a label the reference lacks is not counted
            self._label_index.get(label, -1)
            if name == LABEL
            else self.reference.bin_of(name, values[name])
            for name in self.names
        )
        with self._lock:
            if len(self._bins) == self.size:
                self._count(self._bins.popleft(), -1)
            self._bins.append(bins)
            self._count(bins, +1)

    def _count(self, bins: tuple[int, ...], step: int) -> None:
        for name, index in zip(self.names, bins, strict=True):
            if index >= 0:
                self._counts[name][index] += step

    def __len__(self) -> int:
        return len(self._bins)

    def counts(self) -> tuple[int, dict[str, list[int]]]:
        """The requests in the window and their bin counts per statistic (a copy)."""
        with self._lock:
            return len(self._bins), {name: list(values) for name, values in self._counts.items()}

    def scores(self) -> dict[str, float]:
        """PSI per statistic; empty until the window holds min_requests requests."""
        n, counts = self.counts()
        return scores_of(self.reference, n, counts, self.min_requests)


def scores_of(
    reference: Reference, n: int, counts: Mapping[str, Sequence[float]], min_requests: int
) -> dict[str, float]:
    """PSI per statistic of n requests' bin counts; empty below min_requests requests."""
    if n < min_requests:
        return {}
    return {name: psi(reference.counts[name], counts[name]) for name in reference.names}


@dataclass(frozen=True)
class DriftRow:
    """One line of a drift report."""

    statistic: str
    score: float
    threshold: float

    @property
    def drifted(self) -> bool:
        """Whether the score is above its threshold."""
        return self.score > self.threshold

    @property
    def status(self) -> str:
        """`drift`, `ok`, or `filling` while the window is too short for a score."""
        if math.isnan(self.score):
            return "filling"
        return "drift" if self.drifted else "ok"


def report_lines(rows: Sequence[DriftRow], window: float | None = None) -> list[str]:
    """A drift report as aligned text lines (statistic, PSI, threshold, status)."""
    lines = [f"{'statistic':<22} {'psi':>8} {'threshold':>9}  status"]
    lines += [
        f"{row.statistic:<22} {_score_text(row.score):>8} {row.threshold:>9.2f}  {row.status}"
        for row in rows
    ]
    drifted = [row.statistic for row in rows if row.drifted]
    summary = f"drift in {', '.join(drifted)}" if drifted else "no drift"
    if window is not None:
        summary += f" (window: {int(window)} requests)"
    return [*lines, summary]


def _score_text(score: float) -> str:
    return "-" if math.isnan(score) else f"{score:.3f}"
