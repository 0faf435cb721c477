"""Shared benchmark plumbing: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
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
        f"({result['machine']['cores']} cores, {result['machine']['memory_gb']} GB).\n\n"
        f"Command: `{result['command']}`\n\n"
    )
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n{header}{markdown}\n")
