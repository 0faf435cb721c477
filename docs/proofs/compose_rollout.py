"""The Compose rollout for real: v1 → v2 → rollback under constant load, zero failed requests.

`make compose-demo` runs the whole story on a fresh Compose project and writes
docs/proofs/compose-rollout.md: build the images, start `core` (S3 + MLflow), train two
versions with the `train` profile, start `serve` (predictor-v1, predictor-v2, gateway), then,
while clients POST real FSDD recordings through the gateway the whole time, step the weights
100/0 → 90/10 → 50/50 → 0/100 → rollback → rollback with `kws deploy --apply compose`, kill
predictor-v2 and bring it back, restart MLflow, and take everything down. Every command, its
output and the count of answers per version and step go into the transcript.

The e2e suite (tests/e2e/test_compose_rollout.py) runs the same steps and asserts on them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KWS = Path(sys.executable).with_name("kws")
VERSIONS = ("v1", "v2")
TRANSITION = "transition"  # requests sent while a change is applied: checked, not split
# (what the step shows, the `kws deploy` arguments, the weights it must produce)
ROLLOUT: tuple[tuple[str, tuple[str, ...], dict[str, int]], ...] = (
    ("install: all traffic on v1", ("apply",), {"v1": 100, "v2": 0}),
    ("canary: 10 % on v2", ("set-weights", "v1=90", "v2=10"), {"v1": 90, "v2": 10}),
    ("half and half", ("set-weights", "v1=50", "v2=50"), {"v1": 50, "v2": 50}),
    ("promote v2", ("promote", "v2"), {"v1": 0, "v2": 100}),
    ("rollback (to the previous revision, 50/50)", ("rollback",), {"v1": 50, "v2": 50}),
    ("rollback to revision 1 (100/0)", ("rollback", "1"), {"v1": 100, "v2": 0}),
)
TINY_TRAINING = "data.max_per_class=5 train.epochs=1"


def free_port() -> int:
    """A TCP port nothing listens on now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Answer:
    """One request of the load: the step it was sent in, and what came back."""

    phase: str
    status: int | None
    version: str | None
    error: str | None
    seconds: float

    @property
    def failed(self) -> bool:
        """Anything but a 200 that names a model version."""
        return self.status != 200 or self.version is None


def multipart(path: Path) -> tuple[bytes, str]:
    """A multipart/form-data body uploading one WAV as `file`; the body and its content type."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'.encode(),
            b"Content-Type: audio/wav\r\n\r\n",
            path.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Load:
    """Constant load: `clients` threads POSTing real WAVs to /predict, a new connection each."""

    def __init__(
        self,
        host: str,
        port: int,
        wavs: Sequence[Path],
        clients: int = 4,
        pause: float = 0.05,
        timeout: float = 30,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.pause = pause  # between a client's requests: a steady load, not a CPU-bound one
        self.bodies = [multipart(path) for path in wavs]
        self.clients = clients
        self.phase = TRANSITION
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the clients."""
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the clients after their current request."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def versions(self, phase: str) -> Counter[str]:
        """Answers per model version in one step."""
        with self._lock:
            return Counter(
                a.version for a in self.answers if a.phase == phase and a.version and not a.failed
            )

    def failures(self, phase: str | None = None) -> list[Answer]:
        """Failed requests (in one step, or over the whole run)."""
        with self._lock:
            return [a for a in self.answers if a.failed and phase in (None, a.phase)]

    def wait_for(self, phase: str, count: int, timeout: float = 300) -> None:
        """Return once `count` requests sent in `phase` have an answer."""
        deadline = time.monotonic() + timeout
        while self.answered(phase) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{phase}: {self.answered(phase)}/{count} answers in {timeout}s")
            time.sleep(0.05)

    def answered(self, phase: str) -> int:
        """Requests sent in `phase` that came back (answered or failed)."""
        with self._lock:
            return sum(1 for a in self.answers if a.phase == phase)

    def _client(self, index: int) -> None:
        turn = index
        while not self._stop.is_set():
            body, content_type = self.bodies[turn % len(self.bodies)]
            turn += self.clients
            answer = self._post(self.phase, body, content_type)
            with self._lock:
                self.answers.append(answer)
            self._stop.wait(self.pause)

    def _post(self, phase: str, body: bytes, content_type: str) -> Answer:
        start = time.monotonic()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(
                "POST", "/predict", body, {"Content-Type": content_type, "Connection": "close"}
            )
            response = connection.getresponse()
            payload = response.read()
            version = None
            if response.status == 200:
                version = "v" + str(json.loads(payload)["model"]["version"])
            error = None if response.status == 200 else payload[:200].decode(errors="replace")
            return Answer(phase, response.status, version, error, time.monotonic() - start)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            return Answer(phase, None, None, repr(exc), time.monotonic() - start)
        finally:
            connection.close()


def within_sampling_error(count: int, total: int, weight: int) -> bool:
    """Whether `count` of `total` answers fits a `weight` % share (4 sigma, plus one point)."""
    if weight in (0, 100):
        return count == total * weight // 100
    share = weight / 100
    sigma = math.sqrt(share * (1 - share) / total)
    return abs(count / total - share) <= 4 * sigma + 0.01


@dataclass
class Step:
    """One step of the story: the weights it set, and the answers counted while it held."""

    title: str
    weights: dict[str, int]
    counts: dict[str, int]
    failed: int

    @property
    def total(self) -> int:
        """Answers counted in this step."""
        return sum(self.counts.values())

    def matches(self) -> bool:
        """Whether every version's share of answers fits its weight."""
        return all(
            within_sampling_error(self.counts.get(name, 0), self.total, weight)
            for name, weight in self.weights.items()
        )


@dataclass
class Transcript:
    """Commands with their output, and the table of steps, as Markdown."""

    blocks: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def command(self, shown: str, output: str, seconds: float) -> None:
        """Record one command."""
        lines = output.strip().splitlines() or ["(no output)"]
        if len(lines) > 40:  # image builds: their start and their summary
            lines = [*lines[:5], f"... ({len(lines) - 25} lines) ...", *lines[-20:]]
        text = "\n".join(lines)
        self.blocks.append(f"```console\n$ {shown}   # {seconds:.1f} s\n{text}\n```\n")

    def note(self, text: str) -> None:
        """Record a line of prose."""
        self.blocks.append(text.strip() + "\n")


@dataclass
class Compose:
    """One Compose project of this repository, and the `kws deploy` state of its gateway."""

    project: str
    env_file: Path
    workdir: Path  # gateway conf.d, deploy values and revision history of this project
    transcript: Transcript = field(default_factory=Transcript)
    refusal: str = ""  # what `kws deploy` said when asked to send traffic to a dead version

    @property
    def gateway_conf(self) -> Path:
        """The nginx file the gateway mounts (GATEWAY_CONF_DIR of the env file)."""
        return self.workdir / "conf.d" / "kws-gateway.conf"

    def environ(self) -> dict[str, str]:
        """The environment `docker compose` and `kws deploy` run with."""
        return {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "COMPOSE_ENV_FILES": str(self.env_file),
            "KWS_DEPLOY_APPLY": "compose",
            "KWS_DEPLOY_VALUES": str(self.workdir / "values.yaml"),
            "KWS_DEPLOY_STATE": str(self.workdir / "state"),
            "KWS_GATEWAY_CONF": str(self.gateway_conf),
        }

    def prepare(self) -> None:
        """The gateway's starting point: the repository's Compose values and their render."""
        self.gateway_conf.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "docker/gateway/values.yaml", self.workdir / "values.yaml")
        shutil.copy(REPO / "docker/gateway/conf.d/kws-gateway.conf", self.gateway_conf)

    def run(
        self, *args: str, shown: str | None = None, timeout: float = 900, fails: bool = False
    ) -> str:
        """Run a command in the repository, record it; its stdout (RuntimeError on failure),
        or with `fails` its stderr (RuntimeError if it succeeds)."""
        start = time.monotonic()
        proc = subprocess.run(
            args,
            cwd=REPO,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = proc.stdout if proc.returncode == 0 else proc.stdout + proc.stderr
        self.transcript.command(shown or " ".join(args), output, time.monotonic() - start)
        if fails:
            if proc.returncode == 0:
                raise RuntimeError(f"{' '.join(args)} should have failed:\n{output[-3000:]}")
            return proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{output[-3000:]}")
        return proc.stdout

    def compose(self, *args: str, timeout: float = 900) -> str:
        """`docker compose ARGS` on this project."""
        return self.run("docker", "compose", *args, timeout=timeout)

    def deploy(self, *args: str, fails: bool = False) -> str:
        """`kws deploy ARGS` against this project's gateway."""
        shown = f"kws deploy {' '.join(args)}"
        return self.run(str(KWS), "deploy", *args, shown=shown, fails=fails)

    def container(self, service: str) -> str:
        """The container id of a service."""
        return self.compose("ps", "--all", "--quiet", service).strip()

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project still on the engine."""
        label = f"label=com.docker.compose.project={self.project}"
        listings = {
            "containers": ("ps", "--all", "--format", "{{.Names}}"),
            "networks": ("network", "ls", "--format", "{{.Name}}"),
            "volumes": ("volume", "ls", "--format", "{{.Name}}"),
        }
        return {
            kind: self.run("docker", *listing, "--filter", label).split()
            for kind, listing in listings.items()
        }


@contextmanager
def phase(load: Load, title: str) -> Iterator[None]:
    """Requests sent inside the block are counted under `title`."""
    load.phase = title
    try:
        yield
    finally:
        load.phase = TRANSITION


def hold(stack: Compose, load: Load, title: str, weights: dict[str, int], answers: int) -> Step:
    """Count `answers` answers under the weights now applied; the step."""
    with phase(load, title):
        load.wait_for(title, answers)
    counts = load.versions(title)
    step = Step(title, weights, {n: counts.get(n, 0) for n in weights}, len(load.failures(title)))
    stack.transcript.steps.append(step)
    return step


def rollout(stack: Compose, load: Load, answers: int) -> list[Step]:
    """100/0 → 90/10 → 50/50 → 0/100 → rollback → rollback, counting answers at each step."""
    steps = []
    for title, args, weights in ROLLOUT:
        stack.deploy(*args)  # sent meanwhile: TRANSITION (either config may answer)
        steps.append(hold(stack, load, title, weights, answers))
    stack.deploy("history")
    return steps


def kill_and_rejoin(stack: Compose, load: Load, answers: int) -> list[Step]:
    """At 50/50, `docker kill` predictor-v2: v1 answers everything; v2 rejoins once healthy."""
    stack.deploy("set-weights", "v1=50", "v2=50")
    stack.run("docker", "kill", stack.container("predictor-v2"), shown="docker kill <predictor-v2>")
    killed = hold(stack, load, "v2 killed (weights 50/50)", {"v1": 100, "v2": 0}, answers)
    stack.refusal = stack.deploy("promote", "v2", fails=True)  # no traffic to a dead version
    stack.compose("start", "predictor-v2")
    stack.compose("up", "--detach", "--wait", "--no-recreate", "predictor-v2", timeout=300)
    stack.deploy("apply")  # the reload looks the restarted container's address up again
    back = hold(stack, load, "v2 back (weights 50/50)", {"v1": 50, "v2": 50}, answers)
    return [killed, back]


def restart_mlflow(stack: Compose, load: Load, answers: int) -> Step:
    """Restart the registry: the predictors keep answering from the models they loaded."""
    with phase(load, "mlflow restarting"):
        stack.compose("restart", "mlflow", timeout=300)
        stack.compose("up", "--detach", "--wait", "--no-recreate", "mlflow", timeout=300)
        load.wait_for("mlflow restarting", answers)
    counts = load.versions("mlflow restarting")
    step = Step(
        "mlflow restarting (weights 50/50)",
        {"v1": 50, "v2": 50},
        {n: counts.get(n, 0) for n in VERSIONS},
        len(load.failures("mlflow restarting")),
    )
    stack.transcript.steps.append(step)
    return step


def env_settings(fsdd: Path, base_image: str, image_tag: str) -> dict[str, str]:
    """A Compose env file's settings: fresh credentials, free ports, a tiny training run."""
    return {
        "BASE_IMAGE": base_image,
        "IMAGE_TAG": image_tag,
        "BIND_ADDRESS": "127.0.0.1",
        "S3_ACCESS_KEY": f"kws-{secrets.token_hex(4)}",
        "S3_SECRET_KEY": secrets.token_hex(20),
        **{
            name: str(free_port())
            for name in ("S3_PORT", "MLFLOW_PORT", "GATEWAY_PORT", "PROMETHEUS_PORT")
        },
        "KWS_FSDD_DIR": str(fsdd),
        "KWS_PIPELINE_SET": TINY_TRAINING,
    }


def write_env(path: Path, settings: dict[str, str]) -> None:
    """Write a Compose env file readable by its owner only (it holds credentials)."""
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    path.chmod(0o600)


def bring_up(stack: Compose) -> None:
    """core, then the train profile (two versions), then serve with the gateway at revision 0."""
    stack.prepare()
    stack.compose("--profile", "core", "up", "--detach", "--wait", timeout=900)
    stack.compose("--profile", "train", "run", "--rm", "trainer", timeout=1800)
    stack.compose("--profile", "serve", "up", "--detach", "--wait", timeout=900)


def markdown(stack: Compose, load: Load, seconds: float) -> str:
    """The transcript as a Markdown page."""
    rows = [
        f"| {s.title} | {' / '.join(str(s.weights[n]) for n in s.weights)} | "
        f"{' / '.join(str(s.counts.get(n, 0)) for n in s.weights)} | {s.failed} | "
        f"{'yes' if s.matches() else 'NO'} |"
        for s in stack.transcript.steps
    ]
    failed = load.failures()
    return "\n".join(
        [
            "# Compose rollout: v1 → v2 → rollback under load",
            "",
            "Generated by `make compose-demo` (docs/proofs/compose_rollout.py); do not edit.",
            f"{load.clients} clients POSTed real FSDD recordings to the gateway's `/predict` "
            f"the whole time, each request on a new connection and {load.pause * 1000:.0f} ms "
            f"after its previous answer: {len(load.answers)} requests "
            f"in {seconds:.0f} s, **{len(failed)} failed**.",
            "",
            "| step | weights v1 / v2 | answers v1 / v2 | failed | shares fit the weights |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "A share fits when it is within 4 standard deviations (plus one point) of the weight;",
            "a weight of 0 or 100 must be met exactly. Requests sent while a change was being",
            "applied count as failures if they failed, but not towards a step's split.",
            "",
            "## Commands",
            "",
            *stack.transcript.blocks,
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole story on a fresh Compose project and write the transcript."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs/proofs/compose-rollout.md")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--pause", type=float, default=0.05, help="seconds between a client's requests"
    )
    parser.add_argument("--answers", type=int, default=300, help="answers counted per step")
    parser.add_argument("--base-image", default=os.environ.get("BASE_IMAGE", "python:3.11-slim"))
    parser.add_argument("--image-tag", default=os.environ.get("IMAGE_TAG", "dev"))
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from kws.data import fsdd  # the real download, or $KWS_FSDD_SOURCE
    from kws.errors import KwsError

    try:
        recordings = fsdd.fetch(REPO / "data" / "raw")
    except KwsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    wavs = sorted(recordings.glob("*_lucas_*.wav"))[:50] or sorted(recordings.glob("*.wav"))[:50]
    with tempfile.TemporaryDirectory(prefix="kws-compose-demo-") as tmp:
        workdir = Path(tmp)
        settings = env_settings(recordings.parent, args.base_image, args.image_tag)
        settings["GATEWAY_CONF_DIR"] = str(workdir / "conf.d")
        write_env(workdir / "demo.env", settings)
        stack = Compose("kws-demo", workdir / "demo.env", workdir)
        start = time.monotonic()
        try:
            stack.run("make", "images", f"BASE_IMAGE={args.base_image}", timeout=3600)
            bring_up(stack)
            load = Load("127.0.0.1", int(settings["GATEWAY_PORT"]), wavs, args.clients, args.pause)
            load.start()
            try:
                rollout(stack, load, args.answers)
                kill_and_rejoin(stack, load, args.answers)
                restart_mlflow(stack, load, args.answers)
            finally:
                load.stop()
        finally:
            stack.compose("--profile", "*", "down", "--volumes", "--remove-orphans")
        left = stack.leftovers()
        stack.transcript.note(
            f"After `docker compose down --volumes`: {sum(map(len, left.values()))} containers, "
            "networks or volumes of the project left."
        )
        page = markdown(stack, load, time.monotonic() - start)
    for path, shown in ((tmp, "<tmp>"), (str(recordings.parent), "<fsdd>"), (str(REPO), "<repo>")):
        page = page.replace(path, shown)
    args.out.write_text(page)
    print(f"{args.out}: {len(load.answers)} requests, {len(load.failures())} failed")
    return 0 if not load.failures() and all(s.matches() for s in stack.transcript.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
