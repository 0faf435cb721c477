"""`helm lint --strict` of charts/kws with Helm's own engine (helm-python-sdk), for every values
set a deployment uses: the chart defaults, each environment file, and each step overlay of
charts/kws/ci over the kind environment (as `helm upgrade -f ENV -f STEP` merges them).

    python -m tests.helm_lint        # `make helm-lint`; exit 1 on any warning or error
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import helm_python

from tests.helpers import REPO
from tests.k8s import CHART, values_files

ENVIRONMENTS = (
    REPO / "manifests" / "gitops" / "values-kind.yaml",
    REPO / "manifests" / "kind" / "values-dind.yaml",
)


def value_sets() -> dict[str, dict[str, Any] | None]:
    """Name -> values: the defaults (None), every environment, every step over the first one."""
    sets: dict[str, dict[str, Any] | None] = {"defaults": None}
    for environment in ENVIRONMENTS:
        sets[environment.relative_to(REPO).as_posix()] = values_files(environment)
    for step in sorted((CHART / "ci").glob("*.yaml")):
        sets[f"values-kind + ci/{step.name}"] = values_files(ENVIRONMENTS[0], step)
    return sets


def problems(values: dict[str, Any] | None, chart: Path = CHART) -> list[str]:
    """Lint findings of severity warning or error (strict: warnings count), one line each."""
    report = helm_python.lint(chart, values, strict=True)
    found = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return [*report["errors"], *found]


def main() -> int:
    """Lint every values set; print one line per set, the findings under it."""
    failed = 0
    for name, values in value_sets().items():
        found = problems(values)
        print(f"{'FAIL' if found else 'ok  '}  {CHART.relative_to(REPO)} [{name}]")
        for line in found:
            print(f"      {line}")
        failed += bool(found)
    print(f"helm lint --strict: {len(value_sets()) - failed} clean, {failed} with findings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
