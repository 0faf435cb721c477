"""Screenshots of the demo's MLflow UI and ZenML dashboard (`make captures`).

Starts `mlflow server` on the project's store (mlflow.db, mlartifacts/) and the ZenML
dashboard of the local ZenML store (`zenml login --local --blocking`), photographs five
pages with headless Chromium driven by playwright, writes small PNGs next to this file,
and stops both servers again, also on an error or Ctrl-C.

    python docs/captures/capture.py [PROJECT]      # PROJECT: the demo's folder, default .

Read-only: nothing is written to either store. The ZenML dashboard asks a first-time user
an onboarding survey before any page; the browser is told it was answered (the answer to
/api/v1/current-user is amended in the browser only), so the store stays untouched.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Say = Callable[[str], None]
HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_SECONDS = 180.0
PAGE_TIMEOUT_MS = 90_000
# MLflow UI preferences, as the UI itself stores them: the classic ML view (3.x opens on
# GenAI), the assistant panel closed
MLFLOW_UI_STORAGE = {
    "mlflow.workflowType_v1": json.dumps("machine_learning"),
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
}
# the runs list: which columns, in which order, how wide (the UI's own saved state)
RUN_LIST_WIDTHS = {
    "attributes.`Run Name`": 340,
    "runDateAndNestInfo": 150,
    "duration": 80,
    "attributes.`Models`": 120,
    "metrics.`test_accuracy`": 120,
    "metrics.`test_macro_f1`": 120,
    "params.`model.architecture`": 170,
}
RUN_LIST_STATE = {
    "selectedColumns": list(RUN_LIST_WIDTHS)[3:],
    "columnOrder": list(RUN_LIST_WIDTHS),
    "columnWidths": RUN_LIST_WIDTHS,
    "orderByKey": "attributes.start_time",
    "orderByAsc": False,
}
TRANSPARENT_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


class CaptureError(Exception):
    """A capture cannot be made (no runs, a server that does not start, no browser)."""


class PageFailed(Exception):
    """A request of the page to our servers failed: it will not show its content."""


class ServerTrouble(CaptureError):
    """A server did not start or a page did not show its content: its log may say why."""


@dataclass(frozen=True)
class Names:
    """What to photograph in the MLflow store."""

    experiment: str = "kws"
    model: str = "kws"
    variations_experiment: str = "kws-experiments"
    tuning_experiment: str = "kws-tuning"


@dataclass(frozen=True)
class Server:
    """A server this script started (its own process group) or found running."""

    name: str
    url: str
    process: subprocess.Popen[bytes] | None
    log: Path | None


# ---------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(log: Path | None, lines: int = 1) -> str:
    """The last non-empty lines of a server log, for an error message."""
    if log is None or not log.is_file():
        return ""
    text = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:])


def start_server(name: str, command: list[str], url: str, log: Path, env: dict[str, str]) -> Server:
    """Start a server in its own process group, logging to log."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us, not it; we stop the whole group
        )
    return Server(name, url, process, log)


def wait_healthy(server: Server, timeout: float = SERVER_START_SECONDS) -> None:
    """Wait until GET url/health answers 200; a server that exits or hangs is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise ServerTrouble(
                f"{server.name} exited with {server.process.returncode}: {log_tail(server.log)}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{server.url}/health", timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(1.0)
    raise ServerTrouble(f"{server.name} did not answer {server.url}/health in {timeout:.0f} s")


def stop_server(server: Server, grace: float = 20.0) -> None:
    """Stop a started server's whole process group: SIGTERM, then SIGKILL after grace."""
    if server.process is None:
        return
    pgid = server.process.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if wait_group_gone(server.process, pgid, wait):
            break
    server.process.wait(timeout=5)


def wait_group_gone(process: subprocess.Popen[bytes], pgid: int, timeout: float) -> bool:
    """True once no process of the group is left (the leader reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


class Interrupted:
    """Whether Ctrl-C (SIGINT) or SIGTERM arrived: the browser driver may die of it first."""

    signal: int = 0


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, so the `finally` that stops the servers runs."""

    def handler(signum: int, frame: object) -> None:
        Interrupted.signal = signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def server_env() -> dict[str, str]:
    """Our environment with the tools' telemetry off (the pages are photographed offline)."""
    return {
        **os.environ,
        "ZENML_ANALYTICS_OPT_IN": os.environ.get("ZENML_ANALYTICS_OPT_IN", "false"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # the job runner (GenAI judges, a dozen consumer processes) is not needed to browse
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def start_mlflow(project: Path, logs: Path) -> Server:
    """`mlflow server` on the project's SQLite store and artifact folder (one worker)."""
    database = project / "mlflow.db"
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{database}",
        "--artifacts-destination", str(project / "mlartifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return start_server(
        "mlflow server", command, f"http://127.0.0.1:{port}", logs / "mlflow.log", server_env()
    )


def zenml_cli() -> list[str]:
    """The `zenml` console script of this Python's environment.

    ZenML resolves the classes of a deployed local server relative to the main module's
    file, so `python -c` works only as long as no `zenml login --local` server exists.
    """
    script = Path(sys.executable).with_name("zenml")
    return (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "import zenml_cli as z; z.cli()"]
    )


def missing_zenml_server_packages() -> list[str]:
    """Distributions of zenml's `server` extra that are not installed."""
    from packaging.requirements import Requirement

    missing = []
    for line in importlib.metadata.requires("zenml") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or not marker.evaluate({"extra": "server"}):
            continue
        if marker.evaluate({"extra": ""}):  # a core requirement, not the extra's
            continue
        try:
            importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement.name)
    return sorted(set(missing) - {"zenml"})


def running_local_zenml(env: dict[str, str], logs: Path) -> str | None:
    """URL of a local ZenML dashboard already deployed by `zenml login --local`, if running."""
    probe = logs / "zenml_local_server.py"  # a file: ZenML needs the main module's path
    probe.write_text(
        "from zenml.utils.server_utils import get_local_server\n"
        "server = get_local_server()\n"
        "print(server.status.url if server and server.status and server.status.url else '')\n"
    )
    result = subprocess.run(
        [sys.executable, str(probe)], capture_output=True, text=True, env=env, timeout=120
    )
    if result.returncode != 0:  # starting ours would tear down one we cannot see
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CaptureError(f"cannot tell whether a local ZenML server is running: {last}")
    url = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if not url:
        return None
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5):
            return url.rstrip("/")
    except OSError:
        return None


def start_zenml(logs: Path) -> Server:
    """The local ZenML dashboard: a running `zenml login --local` one, else a blocking one."""
    env = server_env()
    existing = running_local_zenml(env, logs)
    if existing:  # the user's own dashboard: use it, leave it running
        return Server("ZenML dashboard (already running)", existing, None, None)
    port = free_port()
    # --blocking serves the local store in this process and leaves the client's
    # configuration alone (the daemon mode would connect the client to the server)
    command = [*zenml_cli(), "login", "--local", "--blocking", "--port", str(port)]
    return start_server(
        "zenml login --local", command, f"http://127.0.0.1:{port}", logs / "zenml.log", env
    )


# ---------------------------------------------------------------- the stores' content


def http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST body as JSON) and decode the JSON answer; None for 404."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise CaptureError(f"{url} answered {exc.code}: {exc.read()[:200]!r}") from exc


def mlflow_experiment_id(url: str, name: str) -> str | None:
    """Id of the named experiment, or None."""
    query = urllib.parse.urlencode({"experiment_name": name})
    answer = http_json(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}")
    return None if not answer else str(answer["experiment"]["experiment_id"])


def mlflow_runs(url: str, experiment_id: str) -> list[dict[str, Any]]:
    """Active runs of an experiment, newest first."""
    body = {
        "experiment_ids": [experiment_id],
        "max_results": 1000,
        "order_by": ["attributes.start_time DESC"],
    }
    return list(http_json(f"{url}/api/2.0/mlflow/runs/search", body).get("runs", []))


def mlflow_versions(url: str, model: str) -> list[dict[str, Any]]:
    """Registered versions of a model, oldest first."""
    query = urllib.parse.urlencode({"filter": f"name='{model}'", "max_results": 1000})
    answer = http_json(f"{url}/api/2.0/mlflow/model-versions/search?{query}") or {}
    return sorted(answer.get("model_versions", []), key=lambda v: int(v["version"]))


def tags(run: dict[str, Any]) -> dict[str, str]:
    """A run's tags as a dict."""
    return {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}


def latest_per_name(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest finished run of each run name, in the order they were started."""
    newest: dict[str, dict[str, Any]] = {}
    for run in runs:
        info = run["info"]
        if info.get("status") == "FINISHED" and info.get("run_name") not in newest:
            newest[info.get("run_name")] = run
    return sorted(newest.values(), key=lambda r: int(r["info"]["start_time"]))


def best_trial(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best trial of the newest Optuna study (its parent run's tag best_trial)."""
    studies = [r for r in runs if "best_trial" in tags(r)]
    if not studies:
        return None
    study = max(studies, key=lambda r: int(r["info"]["start_time"]))
    name = f"trial-{tags(study)['best_trial']}"
    for run in runs:
        same_study = tags(run).get("mlflow.parentRunId") == study["info"]["run_id"]
        if same_study and run["info"].get("run_name") == name:
            return run
    return None


def compare_selection(
    versions: list[dict[str, Any]],
    training: list[dict[str, Any]],
    variations: list[dict[str, Any]],
    tuning: list[dict[str, Any]],
    max_versions: int = 4,
) -> list[dict[str, str]]:
    """Runs to compare: registered versions' (baseline, variant), variations, best trial.

    Each item is {"run_id", "experiment_id"}. Without registered versions the two newest
    training runs stand in for baseline and variant.
    """
    by_id = {r["info"]["run_id"]: r for r in training}
    chosen = [by_id[v["run_id"]] for v in versions[-max_versions:] if v.get("run_id") in by_id]
    if not chosen:
        chosen = list(reversed(training[:2]))
    chosen += latest_per_name(variations)
    trial = best_trial(tuning)
    if trial is not None:
        chosen.append(trial)
    seen: set[str] = set()
    selection = []
    for run in chosen:
        run_id = run["info"]["run_id"]
        if run_id not in seen:
            seen.add(run_id)
            selection.append({"run_id": run_id, "experiment_id": run["info"]["experiment_id"]})
    return selection


@dataclass(frozen=True)
class MlflowContent:
    """What the MLflow pages must show."""

    experiment_id: str
    newest_run_name: str
    run_count: int
    compare: list[dict[str, str]]
    versions: list[str]
    aliases: list[str]


def mlflow_content(url: str, names: Names) -> MlflowContent:
    """Read what the pages will show; no runs or no registered version is an error."""
    experiment_id = mlflow_experiment_id(url, names.experiment)
    if experiment_id is None:
        raise CaptureError(
            f"the MLflow store has no experiment '{names.experiment}': run `make demo` first"
        )
    training = mlflow_runs(url, experiment_id)
    if not training:
        raise CaptureError(
            f"the MLflow experiment '{names.experiment}' has no runs: run `make demo` first"
        )
    versions = mlflow_versions(url, names.model)
    if not versions:
        raise CaptureError(f"the MLflow registry has no version of model '{names.model}'")
    other: dict[str, list[dict[str, Any]]] = {}
    for key, name in (
        ("variations", names.variations_experiment),
        ("tuning", names.tuning_experiment),
    ):
        other_id = mlflow_experiment_id(url, name)
        other[key] = mlflow_runs(url, other_id) if other_id else []
    compare = compare_selection(versions, training, other["variations"], other["tuning"])
    query = urllib.parse.urlencode({"name": names.model})
    model = http_json(f"{url}/api/2.0/mlflow/registered-models/get?{query}")["registered_model"]
    return MlflowContent(
        experiment_id=experiment_id,
        newest_run_name=training[0]["info"]["run_name"],
        run_count=len(training),
        compare=compare,
        versions=[v["version"] for v in versions],
        aliases=sorted(a["alias"] for a in model.get("aliases", [])),
    )


@dataclass(frozen=True)
class ZenmlContent:
    """What the ZenML pages must show."""

    newest_run_name: str
    run_count: int
    dag_run_id: str
    dag_run_name: str
    dag_steps: list[str]


def zenml_content(url: str) -> ZenmlContent:
    """The newest pipeline run and the newest completed one (for the DAG); none is an error."""
    runs = http_json(f"{url}/api/v1/runs?sort_by=desc:created&size=50")
    items = (runs or {}).get("items", [])
    if not items:
        raise CaptureError("the local ZenML store has no pipeline runs: run `make demo` first")
    completed = [r for r in items if r.get("body", {}).get("status") == "completed"]
    dag_run = (completed or items)[0]
    steps = http_json(f"{url}/api/v1/steps?pipeline_run_id={dag_run['id']}&size=100")
    return ZenmlContent(
        newest_run_name=items[0]["name"],
        run_count=int(runs.get("total", len(items))),
        dag_run_id=dag_run["id"],
        dag_run_name=dag_run["name"],
        dag_steps=sorted(s["name"] for s in (steps or {}).get("items", [])),
    )


# ---------------------------------------------------------------- the browser


def save_png(png: bytes, path: Path) -> int:
    """Write a screenshot, reduced to a 256-colour palette when Pillow is there; bytes written."""
    try:
        from PIL import Image
    except ImportError:
        path.write_bytes(png)
        return len(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    palette = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(path, optimize=True)
    return path.stat().st_size


class Browser:
    """One headless Chromium page with helpers to wait for real content and photograph it."""

    def __init__(self, page: Any, cdp: Any) -> None:
        self.page = page
        self.cdp = cdp
        self.pending: dict[int, float] = {}  # request -> when it started
        self.failed: list[str] = []  # our servers' requests that failed, for the error
        page.on("request", lambda r: self.pending.__setitem__(id(r), time.monotonic()))
        page.on("requestfinished", lambda r: self.pending.pop(id(r), None))
        page.on("requestfailed", self._failed)

    def _failed(self, request: Any) -> None:
        self.pending.pop(id(request), None)
        # ERR_ABORTED: the page itself cancelled it (navigation, a superseded query)
        if request.url.startswith("http://127.0.0.1") and "ERR_ABORTED" not in str(request.failure):
            self.failed.append(f"{request.url} ({request.failure})")

    def wait(self, locator: Any, timeout: float = PAGE_TIMEOUT_MS / 1000) -> None:
        """Wait until the locator is visible; give up at once when a request to us failed.

        Chromium drops requests with ERR_NETWORK_CHANGED when network interfaces come and
        go (containers starting on the host); the page then never shows its content.
        """
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        deadline = time.monotonic() + timeout
        while True:
            if self.failed:
                raise PageFailed(f"a request failed: {self.failed[0]}")
            try:
                locator.wait_for(timeout=1000)
                return
            except PlaywrightTimeout:
                if time.monotonic() > deadline:
                    raise

    def busy(self, long_poll: float = 5.0) -> bool:
        """A request is on its way (ones open for long_poll seconds are workers or polls)."""
        now = time.monotonic()
        return any(now - started < long_poll for started in self.pending.values())

    def settle(self, quiet_ms: int = 800, limit_ms: int = 15_000) -> None:
        """Wait for fonts and for the network to be quiet (bounded: the UIs poll)."""
        self.page.evaluate("document.fonts.ready.then(() => true)")
        quiet, waited = 0, 0
        while quiet < quiet_ms and waited < limit_ms:
            self.page.wait_for_timeout(100)
            waited += 100
            quiet = 0 if self.busy() else quiet + 100
        # two frames so the last layout is painted
        self.page.evaluate(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )

    def shot(self, path: Path) -> int:
        """Photograph the viewport (CDP: playwright's own waits for fonts that never settle)."""
        self.settle()
        data = self.cdp.send("Page.captureScreenshot", {"format": "png"})["data"]
        return save_png(base64.b64decode(data), path)


def only_local(page: Any, origins: list[str]) -> None:
    """Serve only our servers: other images become a transparent pixel, the rest fails fast."""

    def route(request_route: Any) -> None:
        request = request_route.request
        if request.url.startswith((*origins, "data:", "blob:")):
            request_route.continue_()
        elif request.resource_type == "image":
            request_route.fulfill(status=200, content_type="image/png", body=TRANSPARENT_PNG)
        else:
            request_route.abort()

    page.route("**/*", route)


def survey_answered(page: Any) -> None:
    """Tell the dashboard the onboarding survey is done (in the browser, not in the store)."""

    def route(request_route: Any) -> None:
        response = request_route.fetch()
        user = response.json()
        user.setdefault("body", {})["email_opted_in"] = False
        metadata = user.get("metadata") or {}
        metadata["user_metadata"] = {
            **(metadata.get("user_metadata") or {}),
            "finished_onboarding_survey": True,
        }
        user["metadata"] = metadata
        request_route.fulfill(response=response, json=user)

    page.route("**/api/v1/current-user*", route)


@contextlib.contextmanager
def browser_page(chromium: str, origins: list[str]) -> Iterator[Browser]:
    """A fresh headless Chromium (new profile) with one 1280x800 page."""
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory(prefix="kws-captures-profile-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            page = context.new_page()
            only_local(page, origins)
            yield Browser(page, context.new_cdp_session(page))
        finally:
            context.close()


def seed_local_storage(page: Any, items: dict[str, str]) -> None:
    """Set UI preferences in localStorage before each page load."""
    script = (
        f"for (const [k, v] of Object.entries({json.dumps(items)})) localStorage.setItem(k, v);"
    )
    page.add_init_script(script)


def mlflow_ui_storage(experiment_id: str) -> dict[str, str]:
    """The MLflow UI's saved preferences for our pictures (the runs list's columns too)."""
    page_state = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState'
    return {**MLFLOW_UI_STORAGE, page_state: json.dumps(RUN_LIST_STATE)}


def collapse_mlflow_sidebar(page: Any) -> None:
    """Fold MLflow's navigation to icons (more room for the tables)."""
    if page.get_by_text("Model registry", exact=True).first.is_visible():
        page.get_by_role("button", name="Toggle sidebar").click()


def dismiss_local_notice(page: Any) -> None:
    """Close the "local version of ZenML" banner a `zenml login --local` daemon shows."""
    notice = page.get_by_role("button", name="Dismiss local-server notice")
    if notice.count():
        notice.first.click()


def fold(page: Any, section: str) -> None:
    """Collapse an MLflow page section by its header."""
    header = page.locator("[role=button][aria-expanded=true]").filter(has_text=section).first
    header.click()


# ---------------------------------------------------------------- the five pictures


@dataclass(frozen=True)
class Picture:
    """One PNG: its page size, what it shows, how to open the page and wait for its content."""

    name: str
    size: tuple[int, int]
    what: str
    show: Callable[[Browser], None]


def mlflow_pictures(url: str, content: MlflowContent, names: Names) -> list[Picture]:
    """Runs list, compare view, registered model."""

    def runs_list(browser: Browser) -> None:
        page = browser.page
        page.goto(f"{url}/#/experiments/{content.experiment_id}/runs")
        browser.wait(page.get_by_text(content.newest_run_name[:20]).first)
        browser.wait(page.get_by_text("matching runs"))
        collapse_mlflow_sidebar(page)
        browser.wait(page.get_by_text("test_accuracy", exact=True).first)

    runs = [c["run_id"] for c in content.compare]
    experiments = list(dict.fromkeys(c["experiment_id"] for c in content.compare))
    query = urllib.parse.urlencode(
        {"runs": json.dumps(runs), "experiments": json.dumps(experiments)}
    )

    def compare(browser: Browser) -> None:
        page = browser.page
        page.goto(f"{url}/#/compare-runs?{query}")
        browser.wait(page.get_by_text(f"Comparing {len(runs)} Runs"))
        browser.wait(page.get_by_text("Run details", exact=True))
        collapse_mlflow_sidebar(page)
        fold(page, "Visualizations")
        fold(page, "Parameters")
        page.get_by_role("switch", name="Metrics - Show diff only").click()
        browser.wait(page.get_by_text("test_accuracy", exact=True).first)

    def registry(browser: Browser) -> None:
        page = browser.page
        page.goto(f"{url}/#/models/{urllib.parse.quote(names.model)}")
        browser.wait(page.get_by_text(f"Version {content.versions[-1]}", exact=True))
        for alias in content.aliases:
            browser.wait(page.get_by_text(f"@ {alias}", exact=True))
        collapse_mlflow_sidebar(page)
        fold(page, "Description")
        fold(page, "Tags")

    aliases = ", ".join(content.aliases) or "no aliases"
    compare_width = max(1280, min(2000, 300 + 205 * len(runs)))  # every run's column
    return [
        Picture("mlflow-runs.png", (1280, 800),
                f"{content.run_count} runs of experiment '{names.experiment}'", runs_list),
        Picture("mlflow-compare.png", (compare_width, 1000),
                f"{len(runs)} runs compared", compare),
        Picture("mlflow-registry.png", (1280, 800),
                f"model '{names.model}': versions {', '.join(content.versions)} ({aliases})",
                registry),
    ]  # fmt: skip


def zenml_pictures(url: str, content: ZenmlContent) -> list[Picture]:
    """Pipeline runs list and the DAG of one run."""

    def runs_list(browser: Browser) -> None:
        page = browser.page
        page.goto(f"{url}/projects/default/runs")
        browser.wait(page.get_by_text(content.newest_run_name[:24]).first)
        dismiss_local_notice(page)

    def dag(browser: Browser) -> None:
        page = browser.page
        page.goto(f"{url}/projects/default/runs/{content.dag_run_id}")
        nodes = page.locator(".react-flow__node")
        for step_name in content.dag_steps:
            browser.wait(nodes.filter(has_text=step_name).first)
        dismiss_local_notice(page)

    what = f"DAG of {content.dag_run_name} ({len(content.dag_steps)} steps)"
    return [
        Picture("zenml-runs.png", (1280, 800), f"{content.run_count} pipeline runs", runs_list),
        # the DAG is tall and thin: a taller page keeps its labels readable
        Picture("zenml-dag.png", (1280, 1200), what, dag),
    ]


def failure(exc: Exception) -> str:
    """What went wrong on a page, in one line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def take(browser: Browser, picture: Picture, out: Path, attempts: int = 4) -> str:
    """Open the page, wait for its content, photograph it (retried); the line that reports it.

    A page that never shows its content is an error naming it, with a picture of what it
    showed instead.
    """
    name = picture.name
    width, height = picture.size
    browser.page.set_viewport_size({"width": width, "height": height})
    first_failure = ""
    for attempt in range(1, attempts + 1):
        browser.failed.clear()
        try:
            picture.show(browser)
            size = browser.shot(out / name)
            retried = f", at attempt {attempt}; {first_failure}" if attempt > 1 else ""
            return f"{name}: {picture.what} ({size / 1024:.0f} KiB{retried})"
        except Exception as exc:
            if attempt < attempts:
                first_failure = failure(exc)
                browser.page.goto("about:blank")  # the retry loads the page afresh
                continue
            failed = Path(tempfile.gettempdir()) / f"kws-captures-failed-{name}"
            with contextlib.suppress(Exception):
                data = browser.cdp.send("Page.captureScreenshot", {"format": "png"})["data"]
                failed.write_bytes(base64.b64decode(data))
            raise ServerTrouble(
                f"{name}: the page never showed its content ({failure(exc)}); it showed {failed}"
            ) from exc
    raise AssertionError("attempts must be at least 1")


# ---------------------------------------------------------------- main


def preflight(project: Path, chromium: str) -> None:
    """Everything that can be checked before a server starts: one clear line if missing."""
    if not (project / "mlflow.db").is_file():
        raise CaptureError(f"no MLflow store at {project / 'mlflow.db'}: run `make demo` first")
    if importlib.util.find_spec("playwright") is None:
        raise CaptureError("playwright is not installed: pip install -e '.[dev]'")
    if not Path(chromium).is_file():
        raise CaptureError(f"no Chromium at {chromium} (Debian: apt-get install chromium)")
    try:
        importlib.metadata.distribution("zenml")
    except importlib.metadata.PackageNotFoundError as exc:
        raise CaptureError("ZenML is not installed: pip install -e '.[pipeline]'") from exc
    missing = missing_zenml_server_packages()
    if missing:
        raise CaptureError(
            "the ZenML dashboard needs zenml[server]: pip install 'zenml[server]=="
            f"{importlib.metadata.version('zenml')}' (missing: {', '.join(missing)})"
        )


def capture(project: Path, out: Path, chromium: str, names: Names, say: Say) -> None:
    """Start both servers, take the five pictures, stop the servers whatever happens.

    The servers' logs are removed, except after a server or page failure (the error names them).
    """
    preflight(project, chromium)
    started = time.monotonic()
    servers: list[Server] = []
    logs = Path(tempfile.mkdtemp(prefix="kws-captures-logs-"))
    try:
        servers.append(start_mlflow(project, logs))
        servers.append(start_zenml(logs))
        for server in servers:
            say(f"waiting for {server.name} at {server.url}")
            wait_healthy(server)
            say(f"{server.name} is up ({time.monotonic() - started:.0f} s)")
        mlflow, zenml = servers
        mlflow_seen = mlflow_content(mlflow.url, names)
        zenml_seen = zenml_content(zenml.url)
        out.mkdir(parents=True, exist_ok=True)
        with browser_page(chromium, [mlflow.url, zenml.url]) as browser:
            seed_local_storage(browser.page, mlflow_ui_storage(mlflow_seen.experiment_id))
            for picture in mlflow_pictures(mlflow.url, mlflow_seen, names):
                say(take(browser, picture, out))
        with browser_page(chromium, [mlflow.url, zenml.url]) as browser:
            survey_answered(browser.page)
            for picture in zenml_pictures(zenml.url, zenml_seen):
                say(take(browser, picture, out))
    except ServerTrouble as exc:
        raise ServerTrouble(f"{exc} (server logs: {logs})") from exc
    except Exception as exc:
        if not isinstance(exc, CaptureError):  # unexpected: the logs may help
            say(f"server logs: {logs}")
            raise
        shutil.rmtree(logs, ignore_errors=True)
        raise
    except BaseException:  # Ctrl-C
        shutil.rmtree(logs, ignore_errors=True)
        raise
    else:
        shutil.rmtree(logs, ignore_errors=True)
    finally:
        stop_servers(servers)


def stop_servers(servers: list[Server]) -> None:
    """Stop the servers we started, newest first; a second Ctrl-C does not cut this short."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for server in reversed(servers):
            stop_server(server)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def say(line: str) -> None:
    """One line of progress, at once (make pipes our output)."""
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command line: one line per picture; `error: ...` and exit 1 when a capture fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", default=".", type=Path, help="the demo's folder")
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", CHROMIUM))
    parser.add_argument("--experiment", default=Names.experiment)
    parser.add_argument("--model", default=Names.model)
    args = parser.parse_args(argv)
    stop_on_signals()
    # playwright's event loop reports the driver's death on Ctrl-C itself: one line is ours
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    names = Names(experiment=args.experiment, model=args.model)
    try:
        capture(args.project.resolve(), args.out.resolve(), args.chromium, names, say)
    except KeyboardInterrupt:
        print("error: interrupted (servers stopped)", file=sys.stderr)
        return 128 + (Interrupted.signal or signal.SIGINT)
    except Exception as exc:  # playwright timeouts and the like: one line, not a traceback
        if Interrupted.signal:
            print("error: interrupted (servers stopped)", file=sys.stderr)
            return 128 + Interrupted.signal
        if isinstance(exc, CaptureError):
            print(f"error: {exc}", file=sys.stderr)
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            print(f"error: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
