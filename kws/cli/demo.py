"""`kws demo`: the whole story on one laptop, as numbered steps a person can follow.

Every step runs the same `kws` command a user would type (printed before it runs), against
the embedded defaults: the local MLflow store (mlflow.db), the local ZenML store and stack,
a server on localhost. The server it starts is always stopped, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import typer

from kws.errors import KwsError

SERVER_START_SECONDS = 120.0
SWAP_SECONDS = 60.0


class DemoError(KwsError):
    """A demo step did not do what the story says."""


@dataclass
class Story:
    """What the demo learnt along the way, for the summary."""

    baseline: str = ""
    variant: str = ""
    accuracy: dict[str, str] = field(default_factory=dict)
    answers: list[tuple[str, str]] = field(default_factory=list)


def kws_command(*args: str) -> list[str]:
    """The `kws` console script next to this Python (the project's venv)."""
    script = Path(sys.executable).with_name("kws")
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "kws.cli", *args]


def step(number: int, title: str) -> None:
    """A step heading."""
    typer.secho(f"\n[{number}/6] {title}", bold=True)


def run(*args: str) -> str:
    """Run one kws command, showing it and its output; a failure stops the demo."""
    typer.secho("$ kws " + " ".join(shlex.quote(a) for a in args), fg="cyan")
    proc = subprocess.run(kws_command(*args), stdout=subprocess.PIPE, text=True, check=False)
    typer.echo(proc.stdout.rstrip())
    if proc.returncode != 0:
        raise DemoError(f"`kws {' '.join(args)}` failed (exit {proc.returncode})")
    return proc.stdout


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, body: bytes | None = None, timeout: float = 10.0) -> dict:
    """GET (or POST a WAV) and decode the JSON answer."""
    headers = {"Content-Type": "audio/wav"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return dict(json.loads(response.read()))


@contextlib.contextmanager
def running_server(model: str, port: int, poll: float) -> Iterator[str]:
    """`kws serve` in the background until the block ends (Ctrl-C and errors included)."""
    args = ["serve", "--model", model, "--port", str(port), "--poll", str(poll)]
    typer.secho("$ kws " + " ".join(args) + " &", fg="cyan")
    process = subprocess.Popen(kws_command(*args), stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                raise DemoError(f"the server exited with code {process.returncode}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                if get_json(url + "/v2/health/ready", timeout=2).get("ready"):
                    break
            if time.monotonic() > deadline:
                raise DemoError(f"the server was not ready within {SERVER_START_SECONDS:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        typer.echo(f"server on port {port} stopped")


def predict(url: str, wav: Path) -> dict:
    """POST the WAV to /predict and show the answer."""
    answer = get_json(url + "/predict", wav.read_bytes())
    model = answer["model"]
    typer.echo(
        f"$ curl -H 'Content-Type: audio/wav' --data-binary @{wav.name} {url}/predict\n"
        f"  → {answer['label']} (confidence {answer['confidence']:.3f}) from "
        f"{model['name']} v{model['version']} ({model['alias']})"
    )
    return answer


def wait_for_version(url: str, wav: Path, version: str) -> dict:
    """Ask until the server answers from `version` (it polls the registry alias)."""
    deadline = time.monotonic() + SWAP_SECONDS
    while True:
        answer = get_json(url + "/predict", wav.read_bytes())
        if answer["model"]["version"] == version:
            return answer
        if time.monotonic() > deadline:
            raise DemoError(
                f"the server still serves v{answer['model']['version']}, not v{version}"
            )
        time.sleep(0.5)


def swap_story(
    url: str, wav: Path, champion: str, challenger: str, story: Story, *gate_args: str
) -> None:
    """Steps 4 and 5 against a running server: gate → hot swap → rollback, checked by answers."""
    step(4, "the promotion gate compares the challenger with the champion on the unseen speaker")
    decision = run("registry", "gate", *gate_args)
    if not decision.startswith("promoted"):
        raise DemoError(f"the gate kept v{champion}: {decision.strip()}")
    typer.echo(f"the server polls the `champion` alias and hot-swaps to v{challenger}:")
    wait_for_version(url, wav, challenger)
    answer = predict(url, wav)
    story.answers.append((f"v{challenger} after the gate", answer["label"]))
    step(5, "roll back: the champion returns to the previous version")
    run("registry", "rollback")
    wait_for_version(url, wav, champion)
    answer = predict(url, wav)
    story.answers.append((f"v{champion} after the rollback", answer["label"]))


def registered_version(output: str) -> str:
    """The version a `kws pipeline run` registered, from its last line."""
    match = re.search(r"registered \S+ version (\d+)", output)
    if match is None:
        raise DemoError("the pipeline run registered no model version")
    return match.group(1)


def unseen_speaker_clip(prepared: Path) -> Path:
    """A real recording of the test speaker (no training or selection ever saw them)."""
    with (prepared / "manifest.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["split"] == "test":
                return Path(row["path"])
    raise DemoError(f"{prepared}/manifest.csv has no test clip")


def demo(
    port: int = typer.Option(0, help="Port of the demo server (0: a free one)."),
) -> None:
    """The whole story: data → ZenML pipeline v1 and v2 → serve → gate → hot swap → rollback."""
    story = Story()
    started = time.monotonic()
    step(1, "environment and data (verified; KWS_FSDD_SOURCE points at a local copy)")
    typer.echo(f"python {sys.version.split()[0]} in {sys.prefix}")
    run("data", "fetch")
    run("data", "prepare")
    step(2, "the ZenML training pipeline, twice, tracked in MLflow and registered as `kws`")
    run("pipeline", "stack", "local")
    story.baseline = registered_version(run("pipeline", "run", "--config", "baseline"))
    run("registry", "promote", story.baseline)
    story.variant = registered_version(run("pipeline", "run", "--config", "variant"))
    typer.echo(f"v{story.baseline} (baseline CNN) is champion, v{story.variant} challenger")
    step(3, "serve the champion and ask it about a recording of the unseen test speaker")
    wav = unseen_speaker_clip(Path("data/prepared"))
    with running_server("models:/kws@champion", port or free_port(), poll=1.0) as url:
        answer = predict(url, wav)
        story.answers.append((f"v{story.baseline} as champion", answer["label"]))
        swap_story(url, wav, story.baseline, story.variant, story)
        step(6, "stop the server and sum up")
    summary(story, wav, time.monotonic() - started)


def summary(story: Story, wav: Path, seconds: float) -> None:
    """Versions, accuracies, where the runs are, what to try next."""
    run("registry", "list")
    typer.echo(f"\n{wav.name} (true label: {wav.name.split('_')[0]}) was answered as:")
    for when, label in story.answers:
        typer.echo(f"  {when:<28} {label}")
    typer.echo(
        f"\ndemo finished in {seconds / 60:.1f} min. Look at the runs:\n"
        "  .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db   "
        "# http://127.0.0.1:5000 (experiment `kws`, model `kws`)\n"
        "  .venv/bin/zenml login --local                                 "
        "# the ZenML dashboard (needs zenml[server])\n"
        "Try next: `kws cv` (leave-one-speaker-out), `kws tune`, `dvc repro`, "
        f"`kws serve` then `curl -F file=@{wav} localhost:8080/predict`."
    )
