"""Render charts/kws for every overlay with Helm's engine and run checkov on the manifests.

    python -m tests.chart_check [--checkov PATH] [--out DIR]

checkov knows built-in kinds only, so next to each render goes the Deployment KServe makes
of each Standard-mode InferenceService (tests/k8s.py: kserve_deployment): the predictor pod
spec is what gets checked. Skipped checks and their reasons: .checkov.yaml.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from kws import deploy
from tests.helpers import REPO
from tests.k8s import CHART, documents, kserve_deployment, merge_values, values_files

ENVIRONMENT = REPO / "manifests" / "gitops" / "values-kind.yaml"


def value_sets() -> dict[str, dict[str, Any]]:
    """Every overlay, the kind environment, and the environment with every switch on."""
    sets = {p.stem: values_files(p) for p in sorted((CHART / "ci").glob("*.yaml"))}
    sets["environment"] = values_files(ENVIRONMENT)
    everything = {
        "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "test": {"url": "http://kws-gateway.kws.svc"},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
    }
    sets["environment-all-on"] = merge_values(sets["environment"], everything)
    sets["environment-knative"] = merge_values(sets["environment"], {"knative": {"enabled": True}})
    return sets


def render_all(out: Path) -> int:
    """Write every render (and the KServe Deployments) under `out`; the number of objects."""
    shutil.rmtree(out, ignore_errors=True)
    count = 0
    for name, values in value_sets().items():
        folder = out / name
        folder.mkdir(parents=True)
        # one namespace per render: checkov's graph checks (NetworkPolicy -> pods) match by
        # namespace and labels, and must not pair one render's pods with another's policy
        text = deploy.render_helm(values, CHART, namespace=name)
        manifests = documents(text)
        standard = [
            m
            for m in manifests
            if m["kind"] == "InferenceService"
            and m["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        ]
        generated = [kserve_deployment(m) for m in standard]
        (folder / "manifests.yaml").write_text(text)
        (folder / "kserve-deployments.yaml").write_text(yaml.safe_dump_all(generated))
        count += len(manifests) + len(generated)
    return count


def main() -> int:
    """Render, then run checkov; checkov's exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", default="checkov", help="checkov executable")
    # not under a dot folder: checkov silently skips those (and would pass having checked nothing)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "chart-check")
    args = parser.parse_args()
    count = render_all(args.out)
    print(f"rendered {count} objects into {args.out}", flush=True)
    report = args.out.with_name(f"{args.out.name}-checkov.json")
    command = [
        args.checkov,
        "--compact",
        "--config-file",
        str(REPO / ".checkov.yaml"),
        "--directory",
        str(args.out),
        "--output",
        "cli",
        "--output",
        "json",
        "--output-file-path",
        f"console,{report}",
    ]
    status = subprocess.run(command, check=False).returncode
    checked = checked_resources(report)
    if checked == 0:
        print("error: checkov checked no resource", file=sys.stderr)
        return 1
    print(f"checkov: {checked} check results, exit status {status}")
    return status


def checked_resources(results: Path) -> int:
    """Passed + failed check results in checkov's JSON report (one report or a list of them)."""
    data = json.loads(results.read_text())
    reports = data if isinstance(data, list) else [data]
    return sum(r["summary"]["passed"] + r["summary"]["failed"] for r in reports)


if __name__ == "__main__":
    sys.exit(main())
