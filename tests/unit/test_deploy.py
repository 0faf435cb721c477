"""kws.deploy: the deploy values model, its revision history and the Compose gateway render."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kws import deploy
from kws.cli.deploy import app
from kws.deploy import DeployError
from tests.helpers import REPO


def canary(v1: int = 90, v2: int = 10) -> dict[str, Any]:
    return {
        "versions": [
            {"name": "v1", "model": "models:/kws/1", "weight": v1},
            {"name": "v2", "model": "models:/kws@challenger", "weight": v2},
        ],
        "image": {"repository": "kws-predictor", "tag": "0.1.0"},
    }


def with_version(**fields: Any) -> dict[str, Any]:
    values = canary()
    values["versions"][1].update(fields)
    return values


def test_valid_values_give_their_versions() -> None:
    versions = deploy.parse_versions(with_version(image="localhost:5001/kws-predictor:0.2.0"))
    assert versions == [
        deploy.Version("v1", "models:/kws/1", 90),
        deploy.Version("v2", "models:/kws@challenger", 10, "localhost:5001/kws-predictor:0.2.0"),
    ]
    assert deploy.route_weights(canary()) == {"v1": 90, "v2": 10}
    assert deploy.describe(canary()) == "v1=90 (models:/kws/1) v2=10 (models:/kws@challenger)"


@pytest.mark.parametrize(
    "model",
    [
        "models:/kws/2",
        "models:/kws@champion",
        "s3://kws-models/v2/package",
        "gs://bucket/kws/2",
        "pvc://models/kws/2",
        "runs:/0123abcd/model",
        "mlflow-artifacts:/1/abc/artifacts/model",
        "file:///models/package",
        "models/package",
        "/opt/models/package",
    ],
)
def test_registry_and_storage_uris_are_accepted(model: str) -> None:
    deploy.check_model_uri(model)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["v1"], "expected a mapping with a `versions` list"),
        ({**canary(), "replicas": 2}, "unknown key 'replicas'"),
        ({"versions": []}, "`versions` must be a non-empty list"),
        ({"versions": ["v1"]}, r"versions\[0\]: expected a mapping"),
        (with_version(wieght=10), r"versions\[1\] \(v2\): unknown key 'wieght'"),
        (
            {"versions": [{"name": "v1", "weight": 100}]},
            r"versions\[0\] \(v1\): missing 'model'",
        ),
        (with_version(name="V2"), "name 'V2' is not a DNS-1123 label"),
        (with_version(name="v_2"), "name 'v_2' is not a DNS-1123 label"),
        (with_version(name="-v2"), "name '-v2' is not a DNS-1123 label"),
        (with_version(name="v" * 21), "of at most 20 characters"),
        (with_version(name="v1"), "name 'v1' appears more than once"),
        (with_version(weight=120), r"weight must be an integer from 0 to 100, got 120"),
        (with_version(weight=-10), r"got -10"),
        (with_version(weight=10.0), r"got 10\.0"),
        (with_version(weight=True), r"got True"),
        (with_version(weight="10"), r"got '10'"),
        (canary(80, 10), r"weights sum to 90, not 100 \(v1=80, v2=10\)"),
        (with_version(model="models:/kws"), "registry URIs look like models:/kws/2"),
        (with_version(model="models:/kws/latest"), "registry URIs look like"),
        (with_version(model="s3://bucket"), "needs a bucket \\(or claim\\) and a path"),
        (with_version(model="ftp://host/model"), "expected models:/NAME/VERSION"),
        (with_version(model=""), "expected models:/NAME/VERSION"),
        (with_version(model=2), "model must be a string"),
        (with_version(image="kws predictor"), "image must be an image reference"),
    ],
)
def test_each_problem_is_one_clear_error(values: Any, message: str) -> None:
    with pytest.raises(DeployError, match=message):
        deploy.parse_versions(values)


def test_values_files_round_trip_with_the_chart_keys_kept(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    values = {**canary(), "route": {"paths": ["/predict"]}}
    deploy.save_values(values, path)
    assert deploy.load_values(path) == values
    assert list(yaml.safe_load(path.read_text())) == ["versions", "image", "route"]
    with pytest.raises(DeployError, match="no such deploy values file"):
        deploy.load_values(tmp_path / "missing.yaml")
    path.write_text("versions: [")
    with pytest.raises(DeployError, match="not valid YAML"):
        deploy.load_values(path)
    path.write_text(yaml.safe_dump(canary(95, 10)))
    with pytest.raises(DeployError, match=f"{re.escape(str(path))}: versions: weights sum to 105"):
        deploy.load_values(path)
    with pytest.raises(DeployError, match="weights sum to 105"):
        deploy.save_values(canary(95, 10), tmp_path / "never.yaml")
    assert not (tmp_path / "never.yaml").exists()


def test_set_weights_and_promote_return_new_values() -> None:
    values = canary()
    assert deploy.route_weights(deploy.set_weights(values, {"v1": 50, "v2": 50})) == {
        "v1": 50,
        "v2": 50,
    }
    promoted = deploy.promote(values, "v2")
    assert deploy.route_weights(promoted) == {"v1": 0, "v2": 100}
    assert promoted["versions"][1]["model"] == "models:/kws@challenger"
    assert promoted["image"] == values["image"]
    assert deploy.route_weights(values) == {"v1": 90, "v2": 10}  # not mutated
    with pytest.raises(DeployError, match="weights sum to 110"):
        deploy.set_weights(values, {"v2": 20})
    with pytest.raises(DeployError, match="no version 'v3' \\(versions: v1, v2\\)"):
        deploy.set_weights(values, {"v3": 10})
    with pytest.raises(DeployError, match="promote: no version 'v3'"):
        deploy.promote(values, "v3")


def test_weight_assignments_parse_name_equals_integer() -> None:
    assert deploy.parse_weight_assignments(["v1=90", "v2=10"]) == {"v1": 90, "v2": 10}
    for bad in ("v1", "v1=", "=10", "v1=ten", "v1=-5"):
        with pytest.raises(DeployError, match="expected NAME=WEIGHT"):
            deploy.parse_weight_assignments([bad])


def test_history_numbers_revisions_and_rolls_back_like_helm(tmp_path: Path) -> None:
    history = deploy.History(tmp_path)
    assert history.revisions() == [] and history.current() is None
    for v1, v2 in [(100, 0), (90, 10), (50, 50), (0, 100)]:
        history.apply(canary(v1, v2), f"{v1}/{v2}")
    rolled = history.rollback()
    assert (rolled.number, rolled.description) == (5, "Rollback to 3")
    assert deploy.route_weights(rolled.values) == {"v1": 50, "v2": 50}
    again = history.rollback()  # like helm: the revision before the latest, i.e. 0/100
    assert (again.number, deploy.route_weights(again.values)) == (6, {"v1": 0, "v2": 100})
    first = history.rollback(1)
    assert (first.number, deploy.route_weights(first.values)) == (7, {"v1": 100, "v2": 0})
    reread = deploy.History(tmp_path).revisions()
    assert [r.number for r in reread] == list(range(1, 8))
    assert [r.description for r in reread][-3:] == [
        "Rollback to 3",
        "Rollback to 4",
        "Rollback to 1",
    ]
    with pytest.raises(DeployError, match="no revision 9"):
        history.rollback(9)


def test_history_refuses_what_it_cannot_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history = deploy.History(tmp_path)
    with pytest.raises(DeployError, match="no previous revision \\(0 recorded\\)"):
        history.rollback()
    first = history.apply(canary(), "install")
    with pytest.raises(DeployError, match="no previous revision \\(1 recorded\\)"):
        history.rollback()
    with pytest.raises(DeployError, match="weights sum to 90"):
        history.apply(canary(80, 10), "bad")
    stale = deploy.History(tmp_path)
    monkeypatch.setattr(stale, "current", lambda: first)  # it read the history before...
    deploy.History(tmp_path).apply(canary(50, 50), "other")  # ...another writer took 2
    with pytest.raises(DeployError, match="revision 2 was written by another kws deploy"):
        stale.apply(canary(0, 100), "late")
    assert [r.description for r in history.revisions()] == ["install", "other"]
    (tmp_path / "revisions" / "000003.yaml").write_text("values: [")
    with pytest.raises(DeployError, match="000003.yaml: not a deploy revision"):
        history.revisions()


def test_file_changes_record_the_install_hand_edits_and_rollbacks(tmp_path: Path) -> None:
    path, state = tmp_path / "values.yaml", tmp_path / "state"
    deploy.save_values(canary(100, 0), path)
    revision = deploy.change_file(
        path, state, lambda v: deploy.set_weights(v, {"v1": 90, "v2": 10}), "canary"
    )
    assert revision.number == 2 and deploy.route_weights(deploy.load_values(path))["v2"] == 10
    path.write_text(yaml.safe_dump(canary(50, 50)))  # edited by hand (or a git pull)
    revision = deploy.change_file(path, state, lambda v: deploy.promote(v, "v2"), "promote v2")
    assert revision.number == 4
    assert [r.description for r in deploy.History(state).revisions()] == [
        f"Install from {path}",
        "canary",
        f"Edited {path} outside kws deploy",
        "promote v2",
    ]
    revision = deploy.rollback_file(path, state)
    assert (revision.number, revision.description) == (5, "Rollback to 3")
    assert deploy.load_values(path) == canary(50, 50)


def test_compose_gateway_is_a_weighted_upstream_that_retries_posts() -> None:
    values = {
        "versions": [
            {"name": "v1", "model": "models:/kws/1", "weight": 0},
            {"name": "v2", "model": "models:/kws/2", "weight": 70},
            {"name": "v3", "model": "s3://models/v3", "weight": 30},
        ]
    }
    config = deploy.render_compose_gateway(values, revision=7)
    servers = re.findall(r"^\s+server (.+);$", config, re.M)
    assert servers == [
        "predictor-v1:8080 backup max_fails=1 fail_timeout=5s",  # weight 0: only a fallback
        "predictor-v2:8080 weight=70 max_fails=1 fail_timeout=5s",
        "predictor-v3:8080 weight=30 max_fails=1 fail_timeout=5s",
    ]
    assert "#   v1: models:/kws/1, weight 0" in config
    assert "upstream kws_predictors {" in config and "proxy_pass http://kws_predictors;" in config
    assert "zone kws_predictors 64k;" in config  # one weighted round robin for all workers
    assert "listen 8000;" in config
    assert "location ~ ^/(predict|v1|v2)(/|$) {" in config
    assert "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;" in config
    assert "no side effects" in config and "safe" in config
    assert 'return 200 "7\\n";' in config  # /gateway/revision: what `kws deploy` waits for
    assert deploy.gateway_weights(config) == {"v2": 70, "v3": 30}
    assert config.count("{") == config.count("}")
    custom = deploy.render_compose_gateway(
        {**values, "route": {"paths": ["/predict", "/api/v1.0"]}}, listen_port=9000
    )
    assert "location ~ ^/(predict|api/v1\\.0)(/|$) {" in custom and "listen 9000;" in custom


def test_the_committed_compose_gateway_is_the_render_of_the_committed_compose_values() -> None:
    values = deploy.load_values(REPO / "docker/gateway/values.yaml")
    committed = (REPO / "docker/gateway/conf.d/kws-gateway.conf").read_text()
    assert committed == deploy.render_compose_gateway(values)
    assert deploy.gateway_weights(committed) == {"v1": 100}


def test_a_change_that_cannot_be_applied_leaves_the_file_and_the_history_alone(
    tmp_path: Path,
) -> None:
    path, state = tmp_path / "values.yaml", tmp_path / "state"
    deploy.save_values(canary(100, 0), path)
    applied: list[tuple[int, dict[str, int]]] = []

    def gateway(values: Mapping[str, Any], revision: int) -> None:
        if deploy.route_weights(values)["v2"] == 100:
            raise DeployError("v2 is not ready, so it gets no traffic (nothing changed)")
        applied.append((revision, deploy.route_weights(values)))

    change = lambda v: deploy.set_weights(v, {"v1": 90, "v2": 10})  # noqa: E731
    deploy.change_file(path, state, change, "canary", gateway)
    before = path.read_text()
    with pytest.raises(DeployError, match="v2 is not ready"):
        deploy.change_file(path, state, lambda v: deploy.promote(v, "v2"), "promote", gateway)
    assert path.read_text() == before
    assert [r.description for r in deploy.History(state).revisions()][-1] == "canary"
    revision = deploy.rollback_file(path, state, apply=gateway)
    assert revision.number == 3 and revision.description == "Rollback to 1"
    assert applied == [(2, {"v1": 90, "v2": 10}), (3, {"v1": 100, "v2": 0})]
    assert deploy.apply_file(path, state, gateway).number == 3  # as it is: no new revision
    assert applied[-1] == (3, {"v1": 100, "v2": 0})


def test_compose_gateway_refuses_bad_values() -> None:
    with pytest.raises(DeployError, match="weights sum to 90"):
        deploy.render_compose_gateway(canary(80, 10))


runner = CliRunner()


def test_cli_render_set_weights_promote_rollback_history(tmp_path: Path) -> None:
    path, state, out = tmp_path / "values.yaml", tmp_path / "state", tmp_path / "out"
    deploy.save_values(canary(100, 0), path)
    common = ["--values", str(path), "--state", str(state)]

    result = runner.invoke(app, ["set-weights", "v1=90", "v2=10", *common])
    assert result.exit_code == 0, result.output
    assert result.output == "revision 2: v1=90 (models:/kws/1) v2=10 (models:/kws@challenger)\n"
    result = runner.invoke(app, ["promote", "v2", *common])
    assert result.output.startswith("revision 3: v1=0 ") and result.exit_code == 0
    result = runner.invoke(
        app, ["render", "--target", "compose", "--values", str(path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert deploy.gateway_weights((out / "gateway.conf").read_text()) == {"v2": 100}
    result = runner.invoke(app, ["rollback", *common])
    assert result.output.startswith("revision 4: v1=90 ") and result.exit_code == 0
    result = runner.invoke(app, ["history", "--state", str(state)])
    lines = result.output.splitlines()
    assert lines[0].split() == ["REVISION", "UPDATED", "STATUS", "WEIGHTS", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "4"]
    assert lines[-1].split()[2:] == ["deployed", "v1=90", "v2=10", "Rollback", "to", "2"]
    assert lines[1].split()[2] == "superseded"


def test_cli_errors_are_deploy_errors_and_change_nothing(tmp_path: Path) -> None:
    path, state = tmp_path / "values.yaml", tmp_path / "state"
    deploy.save_values(canary(), path)
    before = path.read_text()
    result = runner.invoke(
        app, ["set-weights", "v1=80", "--values", str(path), "--state", str(state)]
    )
    assert result.exit_code != 0 and isinstance(result.exception, DeployError)
    assert "weights sum to 90" in str(result.exception)
    assert path.read_text() == before and deploy.History(state).revisions() == []
    result = runner.invoke(app, ["rollback", "--values", str(path), "--state", str(state)])
    assert isinstance(result.exception, DeployError)  # only the install revision exists
    result = runner.invoke(app, ["history", "--state", str(tmp_path / "none")])
    assert result.output.startswith("no revisions in ")
