"""The alerting rules pass promtool's checks and unit tests, and the dashboard file is the one
kws/dashboard.py generates (its queries and the rules' are listed for the e2e suite)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kws import dashboard
from tests.helpers import REPO

RULES = REPO / dashboard.RULES_FILE
RULE_TESTS = REPO / "tests" / "prometheus" / "kws-rules.test.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 10 rules found" in proc.stdout


@needs_promtool
def test_promtool_unit_tests_fire_and_clear_every_alert() -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alerts = set(dashboard.rule_expressions()) - {
        name for name in dashboard.rule_expressions() if name.startswith("kws:")
    }
    tested = RULE_TESTS.read_text()
    for alert in alerts:
        assert f"alertname: {alert}, exp_alerts: []" in tested, alert  # cleared
        assert f"alertname: {alert}\n        exp_alerts:\n          - exp_labels" in tested, alert


def test_every_alert_has_a_runbook_section() -> None:
    runbook = (REPO / "docs" / "runbooks" / "alerts.md").read_text()
    alerts = [name for name in dashboard.rule_expressions() if not name.startswith("kws:")]
    assert sorted(alerts) == [
        "KwsDrift",
        "KwsHighErrorRatio",
        "KwsHighLatencyP99",
        "KwsLowConfidence",
        "KwsPredictorDown",
    ]
    for alert in alerts:
        assert f"## {alert}" in runbook, alert
        assert f"docs/runbooks/alerts.md#{alert.lower()}" in RULES.read_text()


def test_the_committed_dashboard_is_the_generated_one() -> None:
    committed = REPO / "docker" / "grafana" / "dashboards" / "kws.json"
    assert committed.read_text() == dashboard.dashboard_json(), "run `make dashboard`"


def test_the_dashboard_shows_what_the_issue_asks_for_and_lists_its_queries() -> None:
    document = json.loads(dashboard.dashboard_json())
    titles = [panel["title"] for panel in document["panels"]]
    assert titles == [
        "Serving version",
        "Requests per second by model version",
        "Error ratio (5xx)",
        "Latency of the inference routes",
        "Predictions per second by label",
        "Confidence",
        "Drift scores (PSI against the model's reference)",
    ]
    assert dashboard.panel_queries(document) == dashboard.dashboard_expressions()
    assert all(p["datasource"]["uid"] == dashboard.DATASOURCE_UID for p in document["panels"])
    expressions = dashboard.promql_expressions()
    assert len(expressions) == len(dashboard.dashboard_expressions()) + 10
    assert expressions["rule KwsDrift"] == "kws_drift_score > kws_drift_threshold"
    assert "sum by (model_version)" in expressions["dashboard[1]"]
    measured = dashboard.promql_expressions(measured=True)
    assert measured["rule KwsDrift"] == "kws_drift_score"
    assert measured["rule KwsHighErrorRatio"] == "kws:error_ratio:rate5m"
    assert measured["rule KwsPredictorDown"] == 'up{job=~".*predictor.*"}'
    assert measured["rule kws:request_rate:rate1m"] == expressions["rule kws:request_rate:rate1m"]


@needs_promtool
def test_every_listed_expression_parses() -> None:
    """promtool parses each expression (as a throwaway recording rule) before e2e runs it."""
    rules = [
        {"record": f"check:{i}", "expr": expr}
        for i, expr in enumerate(dashboard.promql_expressions().values())
    ]
    import tempfile

    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump({"groups": [{"name": "parse", "rules": rules}]}, file)
        file.flush()
        proc = subprocess.run(
            [str(PROMTOOL), "check", "rules", file.name], capture_output=True, text=True
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_the_compose_prometheus_config_is_valid_and_loads_the_rules(tmp_path: Path) -> None:
    """promtool reads the Compose config with the rules folder where Compose mounts it."""
    config = (REPO / "docker" / "prometheus" / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/*.yaml" in config
    local = tmp_path / "prometheus.yml"
    local.write_text(config.replace("/etc/prometheus/rules/", f"{RULES.parent}/"))
    proc = subprocess.run(
        [str(PROMTOOL), "check", "config", str(local)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 10 rules found" in proc.stdout
