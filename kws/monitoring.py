"""Drift scores read back from a running service: a predictor's /metrics (its URL, or a saved
copy of it) or a Prometheus server's query API. Used by `kws monitor report` and by the drift
check of `kws retrain --when drift`.

The predictor writes no request log (requests hold users' audio): its rolling window lives in
memory and reaches the outside as the `kws_drift_score`, `kws_drift_threshold` and
`kws_drift_window_requests` metrics, which is what these functions read.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kws.drift import STATISTIC_NAMES, THRESHOLDS, DriftRow
from kws.errors import KwsError

SCORE, THRESHOLD, WINDOW = "kws_drift_score", "kws_drift_threshold", "kws_drift_window_requests"
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class MonitoringError(KwsError):
    """Drift scores cannot be read from the given source."""


@dataclass(frozen=True)
class DriftReading:
    """Drift scores of a service: one row per statistic, and the window's fill."""

    source: str
    rows: list[DriftRow]
    window: float | None

    @property
    def drifted(self) -> list[str]:
        """Statistics above their threshold."""
        return [row.statistic for row in self.rows if row.drifted]

    @property
    def scored(self) -> bool:
        """Whether any statistic has a score yet (the window may still be filling)."""
        return any(not math.isnan(row.score) for row in self.rows)


def parse_metrics(text: str, source: str = "metrics") -> DriftReading:
    """The drift series of a Prometheus text exposition (a predictor's /metrics)."""
    scores: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    window: float | None = None
    seen_kws = False
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None or line.startswith("#"):
            continue
        name, value = match["name"], _number(match["value"])
        seen_kws = seen_kws or name.startswith("kws_")
        statistic = dict(_LABEL.findall(match["labels"] or "")).get("statistic")
        if name == SCORE and statistic:
            scores[statistic] = value
        elif name == THRESHOLD and statistic:
            thresholds[statistic] = value
        elif name == WINDOW:
            window = value
    if not seen_kws:
        raise MonitoringError(f"{source}: no kws_ metrics there (not a kws predictor's /metrics)")
    if not scores:
        raise MonitoringError(
            f"{source}: no drift scores (the model served has no drift reference: "
            "export it again with this kws)"
        )
    return DriftReading(source, _rows(scores, thresholds), window)


def _rows(scores: dict[str, float], thresholds: dict[str, float]) -> list[DriftRow]:
    order = {name: i for i, name in enumerate(STATISTIC_NAMES)}
    return [
        DriftRow(name, scores[name], thresholds.get(name, THRESHOLDS.get(name, math.inf)))
        for name in sorted(scores, key=lambda n: (order.get(n, len(order)), n))
    ]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_drift(source: str, timeout: float = 10.0) -> DriftReading:
    """Drift scores from a /metrics URL, a saved /metrics file, or a Prometheus base URL.

    A URL whose path ends in /metrics is a predictor; any other http(s) URL is a Prometheus
    server, asked for the worst score of each statistic over every predictor it scrapes.
    """
    if source.startswith(("http://", "https://")):
        path = urllib.parse.urlparse(source).path.rstrip("/")
        if path.endswith("/metrics"):
            return parse_metrics(_get(source, timeout), source)
        return _from_prometheus(source, timeout)
    file = Path(source)
    if not file.is_file():
        raise MonitoringError(f"{source}: no such file (expected a /metrics URL or file)")
    return parse_metrics(file.read_text(errors="replace"), source)


def _get(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode("utf-8", errors="replace"))
    except urllib.error.HTTPError as exc:
        raise MonitoringError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MonitoringError(f"{url}: cannot connect ({reason})") from None


def _query(base: str, promql: str, timeout: float) -> dict[str, float]:
    """An instant query's result as {statistic (or ''): value}."""
    url = f"{base.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        body = json.loads(_get(url, timeout))
        if body.get("status") != "success":
            raise MonitoringError(f"{base}: query {promql!r} failed ({body.get('error')})")
        return {
            item["metric"].get("statistic", ""): float(item["value"][1])
            for item in body["data"]["result"]
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise MonitoringError(f"{base}: not a Prometheus query API ({exc})") from None


def _from_prometheus(base: str, timeout: float) -> DriftReading:
    scores = _query(base, f"max by (statistic) ({SCORE})", timeout)
    if not scores:
        raise MonitoringError(
            f"{base}: Prometheus has no {SCORE} series (no predictor with a drift reference "
            "is scraped)"
        )
    thresholds = _query(base, f"min by (statistic) ({THRESHOLD})", timeout)
    window = _query(base, f"min({WINDOW})", timeout).get("")
    return DriftReading(base, _rows(scores, thresholds), window)
