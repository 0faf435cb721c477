"""Proof that the DVC pipeline reproduces and round-trips through a remote.

Clones the repository, runs `dvc repro` on a small subset, pushes to a fresh
remote, clones again, pulls, and checks hashes, `dvc status`, a no-op `dvc repro`,
that a training parameter reruns only the downstream stages, and that a missing
or corrupt remote object stops the pull with DVC's error. Every command and its
output is recorded for docs/proofs/dvc-push-pull.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

GIT_ID = ["-c", "user.name=kws-proof", "-c", "user.email=kws-proof@localhost"]
# small and needing no system package (synthetic voices need espeak-ng)
SUBSET = {"data.max_per_class": 3, "data.synthetic_voices": 0, "train.epochs": 1}
DOWNSTREAM_OF_TRAIN = {"train", "evaluate", "export"}


@dataclass
class Step:
    """One command run by the proof."""

    where: str
    command: str
    returncode: int
    output: str
    seconds: float


@dataclass
class ProofResult:
    """Commands run and the checks made on them."""

    steps: list[Step] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every check held."""
        return bool(self.checks) and all(self.checks.values())


class Proof:
    """Runs commands in named checkouts and records them."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.result = ProofResult()

    def run(self, where: str, cwd: Path, *command: str, check: bool = True) -> Step:
        """Run a command, record it, and fail loudly if it must succeed and did not."""
        start = time.perf_counter()
        proc = subprocess.run(
            command, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=1800
        )
        output = _strip_progress(proc.stdout + proc.stderr)
        step = Step(where, " ".join(command), proc.returncode, output, time.perf_counter() - start)
        self.result.steps.append(step)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{step.command}` failed in {where}:\n{output[-3000:]}")
        return step

    def check(self, name: str, ok: bool) -> None:
        """Record a named check."""
        self.result.checks[name] = bool(ok)


def run_proof(repo: Path, workdir: Path, fsdd_source: str) -> ProofResult:
    """Run the whole proof in workdir (origin, clone, broken clone, remotes)."""
    env = {
        **os.environ,
        "KWS_FSDD_SOURCE": fsdd_source,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proof = Proof(env)
    origin, clone, broken = workdir / "origin", workdir / "clone", workdir / "broken"
    remote, broken_remote = workdir / "remote", workdir / "remote-broken"

    proof.run("workdir", workdir, "git", "clone", "-q", str(repo), str(origin))
    set_params(origin / "params.yaml", SUBSET)
    proof.run("origin", origin, "git", *GIT_ID, "commit", "-qam", "proof: small subset")
    proof.run("origin", origin, "dvc", "remote", "modify", "--local", "local", "url", str(remote))
    proof.run("origin", origin, "dvc", "repro")
    proof.run("origin", origin, "dvc", "push")
    proof.run("origin", origin, "git", "add", "-A")
    proof.run("origin", origin, "git", *GIT_ID, "commit", "-qm", "proof: dvc.lock and metrics")

    proof.run("workdir", workdir, "git", "clone", "-q", str(origin), str(clone))
    proof.run("clone", clone, "dvc", "remote", "modify", "--local", "local", "url", str(remote))
    proof.run("clone", clone, "dvc", "pull")
    outs = lock_outs(origin / "dvc.lock")
    proof.check("every output pulled", all((clone / o).exists() for o in outs))
    proof.check(
        "pulled outputs have identical hashes",
        tree_hashes(origin, outs) == tree_hashes(clone, outs),
    )
    status = proof.run("clone", clone, "dvc", "status")
    proof.check("dvc status reports nothing to do", "up to date" in status.output)
    repro = proof.run("clone", clone, "dvc", "repro")
    proof.check("dvc repro reruns nothing", not ran_stages(repro.output))
    proof.run("clone", clone, "dvc", "metrics", "show")
    proof.run("clone", clone, "dvc", "params", "diff", "HEAD~2")

    set_params(clone / "params.yaml", {"train.epochs": SUBSET["train.epochs"] + 1})
    proof.run("clone", clone, "dvc", "params", "diff")
    changed = proof.run("clone", clone, "dvc", "repro")
    proof.check(
        "a training parameter reruns only train, evaluate, export",
        ran_stages(changed.output) == DOWNSTREAM_OF_TRAIN,
    )

    shutil.copytree(remote, broken_remote)
    missing = object_path(broken_remote, origin / "data/raw/fsdd/recordings/0_george_0.wav")
    corrupt = object_path(broken_remote, origin / "models/package/labels.json")
    missing.unlink()
    corrupt.write_text('["tampered"]\n')
    proof.run("workdir", workdir, "git", "clone", "-q", str(origin), str(broken))
    proof.run(
        "broken", broken, "dvc", "remote", "modify", "--local", "local", "url", str(broken_remote)
    )
    pull = proof.run("broken", broken, "dvc", "pull", check=False)
    proof.check(
        "a missing or corrupt remote object fails the pull with DVC's error",
        pull.returncode != 0 and "ERROR" in pull.output,
    )
    labels = broken / "models/package/labels.json"
    proof.check(
        "the corrupt object is not checked out",
        not labels.exists() or "tampered" not in labels.read_text(),
    )
    after = proof.run("broken", broken, "dvc", "status", check=False)
    proof.check("dvc status flags the incomplete outputs", "up to date" not in after.output)
    repro_broken = proof.run("broken", broken, "dvc", "repro", "--dry", check=False)
    proof.check(
        "dvc repro would rebuild them rather than trust them", bool(ran_stages(repro_broken.output))
    )
    return proof.result


def set_params(path: Path, values: Mapping[str, object]) -> None:
    """Set dotted keys in a params file."""
    tree = yaml.safe_load(path.read_text())
    for key, value in values.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


def lock_outs(lock: Path) -> list[str]:
    """Every cached output path listed in dvc.lock."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    return sorted({o["path"] for s in stages.values() for o in s.get("outs", [])})


def tree_hashes(root: Path, outs: list[str]) -> dict[str, str]:
    """MD5 of every file under the given outputs, by relative path."""
    hashes = {}
    for out in outs:
        target = root / out
        files = (
            [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
        )
        for path in files:
            hashes[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return hashes


def object_path(remote: Path, file: Path) -> Path:
    """Where a local DVC remote stores a file's content."""
    digest = hashlib.md5(file.read_bytes()).hexdigest()
    return remote / "files" / "md5" / digest[:2] / digest[2:]


def ran_stages(output: str) -> set[str]:
    """Stages `dvc repro` says it is running (or would run, with --dry)."""
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def _strip_progress(text: str) -> str:
    lines = [line.split("\r")[-1] for line in text.splitlines()]
    return "\n".join(line for line in lines if line.strip())


def without_machine_paths(text: str, places: dict[str, str]) -> str:
    """The text with this machine's folders replaced by placeholders (<repo>, <tmp>, ...)."""
    for folder, placeholder in sorted(places.items(), key=lambda item: -len(item[0])):
        if folder:
            text = text.replace(folder, placeholder)
    return text


def write_report(result: ProofResult, path: Path, places: dict[str, str] | None = None) -> None:
    """Markdown record of every command, its output and the checks (machine paths hidden)."""
    lines = [
        "# DVC proof: repro, push, clone, pull, reproduce",
        "",
        "Generated by `make dvc-proof` (`python docs/proofs/dvc_proof.py`); do not edit by hand.",
        f"Run at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, subset params: `{SUBSET}`.",
        "",
        "## Checks",
        "",
        *(f"- [{'x' if ok else ' '}] {name}" for name, ok in result.checks.items()),
        "",
        "## Commands",
        "",
    ]
    for step in result.steps:
        lines += [
            f"### `{step.command}` ({step.where}, exit {step.returncode}, {step.seconds:.1f}s)",
            "",
            "```",
            step.output[-4000:] or "(no output)",
            "```",
            "",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(without_machine_paths("\n".join(lines), places or {}))


def main() -> None:
    """Command line: run the proof and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    parser.add_argument("--out", type=Path, default=Path("docs/proofs/dvc-push-pull.md"))
    parser.add_argument("--fsdd-source", default=os.environ.get("KWS_FSDD_SOURCE", ""))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kws-dvc-proof-") as tmp:
        result = run_proof(args.repo.resolve(), Path(tmp), args.fsdd_source)
        places = {
            str(args.repo.resolve()): "<repo>",
            tmp: "<tmp>",
            str(Path(args.fsdd_source).resolve()) if args.fsdd_source else "": "<fsdd>",
            args.fsdd_source: "<fsdd>",
            str(Path.home()): "~",
        }
        write_report(result, args.out, places)
    for name, ok in result.checks.items():
        print(f"[{'ok' if ok else 'FAILED'}] {name}")
    sys.exit(0 if result.passed else 1)


if __name__ == "__main__":
    main()
