"""The Grafana dashboard of the predictors, generated in code (grafana-foundation-sdk), and
every PromQL expression the dashboard and the alerting rules evaluate.

`kws monitor dashboard` (make dashboard) writes docker/grafana/dashboards/kws.json, which
the Compose `grafana` service provisions; a test keeps the committed file equal to this code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

# the rules' one copy, in the chart of the source checkout this module belongs to
RULES_FILE = Path(__file__).resolve().parents[1] / "charts/kws/files/prometheus/kws-rules.yaml"
DATASOURCE_UID = "prometheus"  # docker/grafana/provisioning/datasources/prometheus.yaml
INFERENCE_ROUTES = "/predict|/v1/.*|/v2/models/.*"
_COMPARISON = re.compile(r"\s(?:>|<|==|!=|>=|<=)\s")  # an alert's condition, outside labels

# (title, unit, [(PromQL, legend)]) per time-series panel, in dashboard order
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Requests per second by model version",
        "reqps",
        [("sum by (model_version) (rate(kws_requests_total[1m]))", "v{{model_version}}")],
    ),
    ("Error ratio (5xx)", "percentunit", [("kws:error_ratio:rate5m", "{{instance}}")]),
    (
        "Latency of the inference routes",
        "s",
        [
            (
                "histogram_quantile(0.5, sum by (le) (rate(kws_request_latency_seconds_bucket"
                f'{{route=~"{INFERENCE_ROUTES}"}}[5m])))',
                "p50",
            ),
            (
                "histogram_quantile(0.99, sum by (le) (rate(kws_request_latency_seconds_bucket"
                f'{{route=~"{INFERENCE_ROUTES}"}}[5m])))',
                "p99",
            ),
        ],
    ),
    (
        "Predictions per second by label",
        "reqps",
        [("sum by (label) (rate(kws_predictions_total[5m]))", "{{label}}")],
    ),
    (
        "Confidence",
        "percentunit",
        [
            (
                "histogram_quantile(0.5, sum by (le) (rate(kws_prediction_confidence_bucket[5m])))",
                "median confidence",
            ),
            ("kws:low_confidence_ratio:rate5m", "share at <= 0.5 ({{instance}})"),
        ],
    ),
    (
        "Drift scores (PSI against the model's reference)",
        "none",
        [
            ("kws_drift_score", "{{statistic}} ({{instance}})"),
            ("kws_drift_threshold", "threshold {{statistic}}"),
        ],
    ),
]
SERVING_VERSION = ("kws_model_info", "v{{version}} {{alias}} ({{instance}})")


def build() -> Any:
    """The dashboard model (grafana_foundation_sdk's Dashboard)."""
    from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    source = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    board = (
        dashboard.Dashboard("kws predictors")
        .uid("kws-predictors")
        .tags(["kws"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
    )
    version = (
        stat.Panel()
        .title("Serving version")
        .datasource(source)
        .span(24)
        .height(4)
        .with_target(
            prometheus.Dataquery()
            .expr(SERVING_VERSION[0])
            .legend_format(SERVING_VERSION[1])
            .ref_id("A")
            .instant()
        )
    )
    board = board.with_panel(version)
    for title, unit, queries in PANELS:
        panel = timeseries.Panel().title(title).datasource(source).unit(unit).span(12).height(8)
        for index, (expr, legend) in enumerate(queries):
            panel = panel.with_target(
                prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("ABCDEF"[index])
            )
        board = board.with_panel(panel)
    return board.build()


def dashboard_json() -> str:
    """The dashboard as Grafana JSON (stable key order, final newline)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return JSONEncoder(sort_keys=True, indent=2).encode(build()) + "\n"


def write_dashboard(out: Path) -> Path:
    """Write the dashboard JSON file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dashboard_json())
    return out


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the dashboard, in panel order."""
    return [SERVING_VERSION[0], *(expr for _, _, queries in PANELS for expr, _ in queries)]


def rule_expressions(rules_file: Path = RULES_FILE) -> dict[str, str]:
    """Every recording and alerting rule's expression, by the rule's name."""
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {
        rule.get("record") or rule["alert"]: " ".join(str(rule["expr"]).split())
        for group in groups
        for rule in group["rules"]
    }


def promql_expressions(rules_file: Path = RULES_FILE, measured: bool = False) -> dict[str, str]:
    """Every PromQL expression of the dashboard and the rules, by a name for test reports.

    An alert returns data only while it fires; with measured=True each alert is listed as
    the series its condition compares (`kws:error_ratio:rate5m` for `... > 0.01`), which
    return data whenever the predictors have had traffic.
    """
    board = {f"dashboard[{i}]": expr for i, expr in enumerate(dashboard_expressions())}
    rules = {f"rule {k}": v for k, v in rule_expressions(rules_file).items()}
    if measured:
        rules = {name: _COMPARISON.split(expr)[0].strip() for name, expr in rules.items()}
    return {**board, **rules}


def panel_queries(document: dict[str, Any]) -> list[str]:
    """The PromQL of every target of a dashboard JSON document."""
    return [t["expr"] for p in document.get("panels", []) for t in p.get("targets", [])]


if __name__ == "__main__":
    print(json.dumps(promql_expressions(), indent=2))
