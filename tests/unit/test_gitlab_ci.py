"""The GitLab CI pipeline (.gitlab-ci.yml): its job graph, its rules in each kind of pipeline,
and that every job runs `make` targets a developer runs too (checked with make's dry run)."""

from __future__ import annotations

import re
import shlex
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml

from tests.e2e import support
from tests.helpers import REPO

CI_FILE = REPO / ".gitlab-ci.yml"
MAKEFILE = REPO / "Makefile"
# Top-level keys of .gitlab-ci.yml that are not jobs (GitLab's reserved keywords).
GLOBAL_KEYS = {
    "stages", "workflow", "variables", "default", "include", "image", "services", "cache",
    "before_script", "after_script", "spec",
}  # fmt: skip
EXPECTED_STAGES = {
    "lint": "lint",
    "test": "test",
    "build": "build",
    "deploy-kind": "deploy",
    "rollout": "deploy",
    "rollback": "deploy",
    "ct-smoke": "ct",
}

# The predefined variables of each kind of pipeline, as GitLab sets them.
BASE = {"CI_DEFAULT_BRANCH": "main", "CI_COMMIT_SHORT_SHA": "0bfe957", "CI_COMMIT_TAG": ""}
PIPELINES: dict[str, dict[str, str]] = {
    "push main": {**BASE, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"},
    "push dev": {**BASE, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "dev"},
    "push dev, open MR": {
        **BASE,
        "CI_PIPELINE_SOURCE": "push",
        "CI_COMMIT_BRANCH": "dev",
        "CI_OPEN_MERGE_REQUESTS": "group/kws-mlops!7",
    },
    "merge request": {
        **BASE,
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_IID": "7",
    },
    "tag v2": {**BASE, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_TAG": "v2"},
    "schedule": {**BASE, "CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main"},
}


@cache
def pipeline() -> dict[str, Any]:
    """.gitlab-ci.yml as GitLab reads it (YAML anchors and `<<` merges resolved)."""
    data = yaml.safe_load(CI_FILE.read_text())
    assert isinstance(data, dict)
    return data


def jobs() -> dict[str, dict[str, Any]]:
    """The jobs: top-level keys that are neither keywords nor hidden (`.name`)."""
    return {
        name: job
        for name, job in pipeline().items()
        if name not in GLOBAL_KEYS and not name.startswith(".")
    }


@cache
def makefile_targets() -> set[str]:
    """The explicit targets of the Makefile (rules, not variable assignments)."""
    targets: set[str] = set()
    for line in MAKEFILE.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_./-][A-Za-z0-9_./ -]*?)\s*:(?![:=])", line)
        if match and not line.startswith(("\t", ".PHONY")):
            targets.update(match.group(1).split())
    return targets


def makefile_variable(name: str) -> str:
    """The value of a simple `NAME ?= value` / `NAME := value` line of the Makefile."""
    match = re.search(rf"^(?:export )?{name}\s*[?:]?=\s*(.*)$", MAKEFILE.read_text(), re.M)
    assert match, f"no {name} in the Makefile"
    return match.group(1).strip()


# --- GitLab's `rules:if` expressions, the subset this file uses ---------------------------


def _operand(token: str, variables: dict[str, str]) -> str | None:
    token = token.strip()
    if token.startswith("$"):
        return variables.get(token[1:]) or None  # unset and empty are both null
    if token == "null":
        return None
    return token.strip('"')


def _term(term: str, variables: dict[str, str]) -> bool:
    if "=~" in term:
        left, pattern = (part.strip() for part in term.split("=~", 1))
        value = _operand(left, variables)
        return value is not None and re.search(pattern.strip("/"), value) is not None
    for operator in ("==", "!="):
        if operator in term:
            left, right = term.split(operator, 1)
            equal = _operand(left, variables) == _operand(right, variables)
            return equal if operator == "==" else not equal
    return _operand(term, variables) is not None


def evaluate(expression: str, variables: dict[str, str]) -> bool:
    """Truth of a `rules:if` expression made of ==, !=, =~, && and || (no parentheses)."""
    return any(
        all(_term(term, variables) for term in alternative.split("&&"))
        for alternative in expression.split("||")
    )


def when(rules: list[dict[str, Any]], variables: dict[str, str]) -> str:
    """`when` of the first matching rule ("never" if none matches), as GitLab decides."""
    for rule in rules:
        if "if" not in rule or evaluate(rule["if"], variables):
            return str(rule.get("when", "on_success"))
    return "never"


def planned(pipeline_kind: str) -> dict[str, str]:
    """Job -> `when` of the jobs a pipeline of this kind contains (none if workflow says no)."""
    variables = PIPELINES[pipeline_kind]
    if when(pipeline()["workflow"]["rules"], variables) == "never":
        return {}
    decisions = {name: when(job["rules"], variables) for name, job in jobs().items()}
    return {name: decision for name, decision in decisions.items() if decision != "never"}


def test_the_rule_evaluator_reads_gitlab_expressions() -> None:
    variables = {"A": "main", "B": "", "TAG": "v12"}
    assert evaluate('$A == "main" && $TAG =~ /^v\\d+/', variables)
    assert not evaluate("$B", variables)  # empty is null
    assert evaluate('$B || $A != "dev"', variables)
    assert not evaluate('$TAG =~ /^release/ || $A == "dev"', variables)


# --- the graph ------------------------------------------------------------------------------


def test_the_stages_are_lint_test_build_deploy_ct_and_each_has_its_jobs() -> None:
    assert pipeline()["stages"] == ["lint", "test", "build", "deploy", "ct"]
    assert {name: job["stage"] for name, job in jobs().items()} == EXPECTED_STAGES


def test_needs_name_existing_jobs_of_earlier_stages() -> None:
    stages = pipeline()["stages"]
    for name, job in jobs().items():
        assert "needs" in job, f"{name}: no `needs` (the graph would wait for whole stages)"
        for need in job["needs"]:
            needed = need if isinstance(need, str) else need["job"]
            assert needed in jobs(), f"{name} needs an unknown job {needed!r}"
            assert stages.index(jobs()[needed]["stage"]) < stages.index(job["stage"]), (
                f"{name} needs {needed}, which is not in an earlier stage"
            )


def test_ct_smoke_runs_in_scheduled_pipelines_only_and_alone() -> None:
    assert planned("schedule") == {"ct-smoke": "on_success"}
    for kind in PIPELINES.keys() - {"schedule"}:
        assert "ct-smoke" not in planned(kind), kind


def test_rollout_and_rollback_are_manual_jobs_of_the_default_branch_only() -> None:
    main = planned("push main")
    assert main["rollout"] == "manual" and main["rollback"] == "manual"
    for kind in PIPELINES.keys() - {"push main"}:
        assert not {"rollout", "rollback"} & planned(kind).keys(), kind
    for name in ("rollout", "rollback"):
        assert jobs()[name]["interruptible"] is False
        assert jobs()[name]["resource_group"] == "kws-cluster"  # one change at a time


def test_which_jobs_each_kind_of_pipeline_runs() -> None:
    checks = {"lint": "on_success", "test": "on_success"}
    images = {**checks, "build": "on_success"}
    assert planned("push dev") == checks
    assert planned("push dev, open MR") == {}  # the merge request pipeline runs instead
    assert planned("merge request") == {**images, "deploy-kind": "manual"}
    assert planned("tag v2") == {**images, "deploy-kind": "on_success"}
    assert planned("push main") == {
        **images,
        "deploy-kind": "on_success",
        "rollout": "manual",
        "rollback": "manual",
    }


def test_jobs_that_only_check_are_interruptible() -> None:
    for name in ("lint", "test", "build", "deploy-kind", "ct-smoke"):
        assert jobs()[name]["interruptible"] is True, name


# --- every job runs make targets -------------------------------------------------------------


def script_lines() -> list[tuple[str, str]]:
    """(job, line) for every line of every job's `script`."""
    return [(name, line) for name, job in jobs().items() for line in job["script"]]


def make_arguments(line: str, variables: dict[str, str]) -> list[str]:
    """The arguments of a `make` line once the shell has expanded the CI variables."""
    expanded = re.sub(r"\$(\w+)", lambda m: shlex.quote(variables.get(m.group(1), "")), line)
    words = shlex.split(expanded, comments=True)
    assert words[0] == "make", f"not a make call: {line!r}"
    return words[1:]


def test_every_script_line_calls_make_targets_that_exist() -> None:
    lines = script_lines()
    assert len(lines) >= 12
    for name, line in lines:
        arguments = make_arguments(line, {})
        targets = [word for word in arguments if "=" not in word and not word.startswith("-")]
        assert targets, f"{name}: {line!r} names no target"
        assert set(targets) <= makefile_targets(), f"{name}: {line!r}"


def test_makes_dry_run_accepts_every_script_line() -> None:
    variables = {
        **PIPELINES["tag v2"],
        "IMAGE": "predictor",
        "IMAGE_TAG": "0bfe957",
        "CI_REGISTRY_IMAGE": "registry.invalid/group/kws-mlops",
        "WEIGHTS": "v1=90 v2=10",
    }
    for name, line in script_lines():
        proc = subprocess.run(
            ["make", "-n", *make_arguments(line, variables)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"{name}: {line!r}\n{proc.stderr}"


def test_the_makefile_parser_sees_targets_and_not_assignments() -> None:
    targets = makefile_targets()
    assert {"lint", "test", "images", "kind-up", "kind-deploy", "ct-smoke"} <= targets
    assert "IMAGES" not in targets and "GIT_COMMIT" not in targets
    assert "no-such-target" not in targets


# --- build, test reports, caches, ct artefacts ------------------------------------------------


def test_build_makes_the_e2e_images_one_job_each_and_pushes_the_commit_sha_tag() -> None:
    build = jobs()["build"]
    (matrix,) = build["parallel"]["matrix"]
    assert matrix["IMAGE"] == makefile_variable("IMAGES").split()
    assert build["script"][0].startswith("make images IMAGES=$IMAGE ")
    push = shlex.split(build["script"][1])
    assert push[:2] == ["make", "push-images"]
    assert {
        "IMAGE_TAG=$CI_COMMIT_SHORT_SHA",
        "REGISTRY=$CI_REGISTRY_IMAGE",
        "EXTRA_TAGS=$CI_COMMIT_TAG",
    } <= set(push)


def test_push_images_pushes_the_sha_tag_and_the_release_tag() -> None:
    def pushes(*assignments: str) -> list[str]:
        out = subprocess.run(  # DOCKER=echo: the recipe runs and prints its docker commands
            [
                "make",
                "push-images",
                "DOCKER=echo",
                "IMAGES=predictor s3",
                "IMAGE_TAG=0bfe957",
                *assignments,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return re.findall(r"^push -q (\S+)$", out, re.M)

    registry = "REGISTRY=registry.invalid/g/kws-mlops"
    assert pushes(registry, "EXTRA_TAGS=v2") == [
        "registry.invalid/g/kws-mlops/predictor:0bfe957",
        "registry.invalid/g/kws-mlops/predictor:v2",
        "registry.invalid/g/kws-mlops/s3:0bfe957",
        "registry.invalid/g/kws-mlops/s3:v2",
    ]
    assert pushes(registry, "EXTRA_TAGS=") == [
        "registry.invalid/g/kws-mlops/predictor:0bfe957",
        "registry.invalid/g/kws-mlops/s3:0bfe957",
    ]
    refused = subprocess.run(
        ["make", "push-images", "DOCKER=echo"], cwd=REPO, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "error: set REGISTRY" in refused.stderr


def test_the_e2e_suite_builds_its_images_with_the_same_make_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, ...]] = []

    def record(*args: str, **_: object) -> str:
        calls.append(args)
        return ""

    monkeypatch.setattr(support, "run", record)
    assert support.build_image("trainer") == f"kws-trainer:{support.IMAGE_TAG}"
    (call,) = calls
    assert call[:3] == ("make", "images", "IMAGES=trainer")


def test_docker_jobs_use_docker_in_docker_and_log_in_from_predefined_variables() -> None:
    assert "kaniko" not in CI_FILE.read_text()
    for name in ("build", "deploy-kind"):
        job = jobs()[name]
        assert [s["alias"] for s in job["services"]] == ["docker"]
        assert pipeline()["variables"][job["services"][0]["name"].lstrip("$")].endswith("-dind")
        login = " ".join(job["before_script"])
        assert '--password-stdin "$CI_REGISTRY"' in login


def test_the_test_job_reports_junit_and_cobertura_where_make_writes_them() -> None:
    reports_dir = makefile_variable("TEST_REPORTS")
    test = jobs()["test"]
    assert test["script"][-1] == "make test-reports"
    reports = test["artifacts"]["reports"]
    assert reports["junit"] == f"{reports_dir}/junit.xml"
    assert reports["coverage_report"] == {
        "coverage_format": "cobertura",
        "path": f"{reports_dir}/coverage.xml",
    }
    recipe = subprocess.run(
        ["make", "-n", "test-reports"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert f"--junitxml={reports_dir}/junit.xml" in recipe
    assert f"--cov-report=xml:{reports_dir}/coverage.xml" in recipe
    assert test["artifacts"]["when"] == "always"  # failures are reported too


def test_pip_and_feature_caches_are_keyed_on_the_lock_file() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    caches = {tuple(c["paths"]): c["key"] for c in jobs()["test"]["cache"]}
    assert set(caches) == {(".cache/pip",), (params["paths"]["cache"],)}
    for key in caches.values():
        assert key["files"] == ["requirements/lock.txt"]
    assert pipeline()["variables"]["PIP_CACHE_DIR"] == "$CI_PROJECT_DIR/.cache/pip"


def test_ct_smoke_keeps_the_gate_report_folder_as_artefacts() -> None:
    ct = jobs()["ct-smoke"]
    assert ct["script"] == ["make ct-smoke"]
    assert ct["artifacts"]["paths"] == [f"{makefile_variable('CT_REPORTS')}/"]
    recipe = subprocess.run(
        ["make", "-n", "ct-smoke"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    # kws retrain: the smoke config trained, registered, gated; its decision as the report
    assert "retrain --when schedule --overlay pipelines/configs/params/smoke.yaml" in recipe
    assert "--report reports/ct/retrain.json" in recipe


def test_deploy_kind_brings_up_kind_deploys_the_built_images_and_posts_a_wav() -> None:
    job = jobs()["deploy-kind"]
    targets = [make_arguments(line, {})[0] for line in job["script"]]
    assert targets == [
        "kind-tools",
        "pull-images",
        "kind-up",
        "kind-seed",
        "kind-deploy",
        "kind-smoke",
    ]
    assert job["variables"]["KIND_API_HOST"] == "docker"
    assert job["variables"]["IMAGE_TAG"] == "$CI_COMMIT_SHORT_SHA"
    config = yaml.safe_load((REPO / job["variables"]["KIND_CONFIG"]).read_text())
    assert config["networking"]["apiServerAddress"] == "0.0.0.0"
    (patch,) = (yaml.safe_load(p) for p in config["kubeadmConfigPatches"])
    assert "apiVersion" not in patch  # kind applies it to any kubeadm config version
    assert "docker" in patch["apiServer"]["certSANs"]


def test_no_secret_is_written_in_the_file() -> None:
    text = CI_FILE.read_text()
    for name in pipeline()["variables"]:
        assert not re.search(r"PASSWORD|TOKEN|SECRET|_KEY$", name), name
    assert not re.search(r"(?i)(password|token|secret)\s*[:=]\s*['\"]?\w", text)
