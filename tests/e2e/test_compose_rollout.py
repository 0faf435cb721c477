"""The Compose stack end to end: train two versions through the s3-backed MLflow, serve both
behind the gateway, and roll v1 → v2 → back under constant load without one failed request.

The steps are docs/proofs/compose_rollout.py's (what `make compose-demo` runs); these tests
assert on them. The load (real FSDD recordings POSTed through the gateway) runs from the
moment `serve` is up until the last step, across the tests of this module, in file order.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.support import BASE_IMAGE, IMAGE_TAG
from tests.helpers import REPO, load_script

PROJECT = "kws-e2e-rollout"  # never the user's own `kws` stack
ANSWERS_PER_STEP = 300


story = load_script("docs/proofs/compose_rollout.py", "compose_rollout")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, fsdd_dir: Path) -> Iterator[Any]:
    """core up, two versions trained by the `train` profile, `serve` up, the load running."""
    workdir = tmp_path_factory.mktemp("rollout")
    settings = story.env_settings(fsdd_dir, BASE_IMAGE, IMAGE_TAG)
    settings["GATEWAY_CONF_DIR"] = str(workdir / "conf.d")
    story.write_env(workdir / "e2e.env", settings)
    stack = story.Compose(PROJECT, workdir / "e2e.env", workdir)
    try:
        story.bring_up(stack)
        wavs = sorted((fsdd_dir / "recordings").glob("*_lucas_*.wav"))[:50]
        stack.load = story.Load("127.0.0.1", int(settings["GATEWAY_PORT"]), wavs, clients=4)
        stack.load.start()
        stack.started = time.monotonic()
        yield stack
    finally:
        if hasattr(stack, "load"):
            stack.load.stop()
        stack.compose("--profile", "*", "down", "--volumes", "--remove-orphans", timeout=300)


def test_the_train_profile_registered_two_versions_through_the_s3_backed_mlflow(
    served: Any,
) -> None:
    from mlflow.tracking import MlflowClient

    settings = dict(line.split("=", 1) for line in served.env_file.read_text().splitlines())
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{settings['MLFLOW_PORT']}")
    versions = client.search_model_versions("name='kws'")
    assert sorted(v.version for v in versions) == ["1", "2"]
    assert all(
        (v.source or "").startswith(("models:/", "mlflow-artifacts:/", "s3://")) for v in versions
    )
    health = served.compose("ps", "--format", "{{.Service}} {{.Health}}").split("\n")
    assert {"predictor-v1 healthy", "predictor-v2 healthy", "gateway healthy"} <= set(health)


def test_each_rollout_step_splits_traffic_by_its_weights_and_fails_no_request(
    served: Any,
) -> None:
    steps = story.rollout(served, served.load, ANSWERS_PER_STEP)
    for step in steps:
        print(f"{step.title}: weights {step.weights}, answers {step.counts}, failed {step.failed}")
    assert [s.weights for s in steps] == [weights for _, _, weights in story.ROLLOUT]
    assert all(s.total >= ANSWERS_PER_STEP for s in steps)
    assert [s.title for s in steps if not s.matches()] == []
    assert [s.failed for s in steps] == [0] * len(steps)
    revisions = served.deploy("history").splitlines()[1:]
    assert [line.split()[-3:] for line in revisions[-2:]] == [
        ["Rollback", "to", "3"],
        ["Rollback", "to", "1"],
    ]


def test_bad_weights_are_one_error_and_change_nothing(served: Any) -> None:
    conf, values = served.gateway_conf.read_text(), (served.workdir / "values.yaml").read_text()
    history = served.deploy("history")
    error = served.deploy("set-weights", "v1=50", "v2=40", fails=True)
    assert error.strip() == "error: versions: weights sum to 90, not 100 (v1=50, v2=40)"
    error = served.deploy("set-weights", "v3=100", fails=True)
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1
    assert served.gateway_conf.read_text() == conf
    assert (served.workdir / "values.yaml").read_text() == values
    assert served.deploy("history") == history


def test_a_killed_v2_sends_its_share_to_v1_and_rejoins_once_healthy(served: Any) -> None:
    killed, back = story.kill_and_rejoin(served, served.load, ANSWERS_PER_STEP)
    print(f"{killed.title}: {killed.counts}; {back.title}: {back.counts}")
    assert killed.counts["v2"] == 0 and killed.counts["v1"] >= ANSWERS_PER_STEP
    assert killed.failed == 0
    assert served.refusal.startswith("error: v2 is not ready, so it gets no traffic")
    assert back.matches() and back.failed == 0
    weights = yaml.safe_load((served.workdir / "values.yaml").read_text())["versions"]
    assert {v["name"]: v["weight"] for v in weights} == {"v1": 50, "v2": 50}


def test_restarting_mlflow_does_not_stop_serving(served: Any) -> None:
    step = story.restart_mlflow(served, served.load, ANSWERS_PER_STEP)
    print(f"{step.title}: {step.counts}")
    assert step.failed == 0 and step.matches()


def setting(served: Any, name: str) -> str:
    """One setting of the project's env file."""
    lines = served.env_file.read_text().splitlines()
    return str(dict(line.split("=", 1) for line in lines)[name])


def prometheus_get(base: str, path: str, **query: str) -> Any:
    """GET a Prometheus API path; its `data`."""
    url = f"{base}{path}?{urllib.parse.urlencode(query)}" if query else base + path
    with urllib.request.urlopen(url, timeout=10) as response:
        document = json.load(response)
    assert document["status"] == "success", document
    return document["data"]


def test_prometheus_scrapes_both_predictors_and_every_dashboard_and_rule_query_has_data(
    served: Any,
) -> None:
    from kws.dashboard import promql_expressions

    served.compose("--profile", "monitoring", "up", "--detach", "--wait", "prometheus")
    base = f"http://127.0.0.1:{setting(served, 'PROMETHEUS_PORT')}"
    expressions = promql_expressions(measured=True)
    assert len(expressions) >= 15
    missing: dict[str, str] = dict(expressions)
    deadline = time.monotonic() + 180  # rates need two scrapes, recording rules an evaluation
    while missing and time.monotonic() < deadline:
        targets = prometheus_get(base, "/api/v1/targets")["activeTargets"]
        up = sorted(t["labels"]["deployment"] for t in targets if t["health"] == "up")
        for name, expression in list(missing.items()):
            if prometheus_get(base, "/api/v1/query", query=expression)["result"]:
                del missing[name]
        time.sleep(2)
    print(f"{len(expressions) - len(missing)}/{len(expressions)} expressions returned data")
    assert up == ["v1", "v2"]
    assert missing == {}


def test_not_one_request_failed_over_the_whole_run(served: Any) -> None:
    served.load.stop()
    failures = served.load.failures()
    print(f"{len(served.load.answers)} requests through the gateway, {len(failures)} failed")
    report = REPO / "reports/e2e/compose-rollout.md"  # CI keeps it; the counts, step by step
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(story.markdown(served, served.load, time.monotonic() - served.started))
    assert len(served.load.answers) >= ANSWERS_PER_STEP * (len(story.ROLLOUT) + 3)
    assert failures == []


def test_down_leaves_no_container_network_or_volume(served: Any) -> None:
    served.compose("--profile", "*", "down", "--volumes", "--remove-orphans", timeout=300)
    assert served.leftovers() == {"containers": [], "networks": [], "volumes": []}
