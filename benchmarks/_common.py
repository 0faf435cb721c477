"""Shared benchmark plumbing: machine description and result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kws.params import Params

RESULTS = Path(__file__).parent / "results"
SIMD_FLAGS = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "amx_int8"}
ROUNDS, INVOKES_PER_ROUND, WARMUP = 10, 100, 50


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import psutil

    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": cpu,
        # what the TFLite kernels (XNNPACK) can use: int8 speed depends on VNNI
        "cpu_flags": sorted(f for f in flags if f in SIMD_FLAGS or f.startswith("avx512")),
        "avx512": any(f.startswith("avx512") for f in flags),
        "load_average": load_average(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def command_line() -> str:
    """How this benchmark was invoked."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def record(name: str, result: dict[str, Any], markdown: str) -> None:
    """Write results/<name>.json and results/<name>.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "machine": machine(),
        **result,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    header = (
        f"Measured {result['measured_at']} on {result['machine']['cpu']} "
        f"({result['machine']['cores']} cores, {result['machine']['memory_gb']} GB, "
        f"AVX-512 {'yes' if result['machine']['avx512'] else 'no'}; load average "
        f"{' / '.join(map(str, result['machine']['load_average']))} at the end"
        f"{_load_at_start(result)}).\n\n"
        f"Command: `{result['command']}`\n\n"
    )
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n{header}{markdown}\n")


def _load_at_start(result: dict[str, Any]) -> str:
    """', at the start ...' when the benchmark noted its starting load average."""
    start = result.get("load_average_at_start")
    return f", {' / '.join(map(str, start))} at the start" if start else ""


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other jobs on the same cores skew timings)."""
    return [round(x, 2) for x in os.getloadavg()]


def interleaved_ms(
    calls: dict[str, Callable[[], object]],
    rounds: int = ROUNDS,
    per_round: int = INVOKES_PER_ROUND,
    warmup: int = WARMUP,
) -> dict[str, dict[str, float]]:
    """Median and p99 ms of each call: warmed up, then interleaved rounds so that a change
    of load hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(warmup):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000)
    return {
        name: {
            "median": round(float(np.median(t)), 3),
            "p99": round(float(np.percentile(t, 99)), 3),
        }
        for name, t in times.items()
    }


def add_params_arguments(parser: argparse.ArgumentParser, source: bool = False) -> None:
    """--params, --overlay, --set and --speaker (and --source), as the accuracy benchmarks
    take them."""
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--overlay", type=Path, action="append", default=[])
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--speaker", action="append", default=[])
    if source:
        parser.add_argument("--source", type=Path, help="a local FSDD copy (else KWS_FSDD_SOURCE)")


def params_of(args: argparse.Namespace) -> Params:
    """The params the arguments name, reading FSDD from --source when given."""
    from kws.params import resolve_params

    params = resolve_params(args.params, args.sets, args.overlay)
    if getattr(args, "source", None):
        params = params.replace(data={"fsdd_source": str(args.source.resolve())})
    return params


def params_config(args: argparse.Namespace) -> dict[str, Any]:
    """The overlays and --set values of a run, for its results file."""
    return {"overlays": [str(o) for o in args.overlay], "sets": args.sets}
