"""The CPUID mask of benchmarks/isa_probe.py: a process sees the instruction sets an AVX2 CPU
has, and nothing else changes."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def cpu_flags() -> set[str]:
    """The kernel's view of this CPU's flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "flags :")
    return set(line.split(":", 1)[1].split())


pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64" or "cpuid_fault" not in cpu_flags() or not shutil.which("cc"),
    reason="needs x86-64 Linux with CPUID faulting and a C compiler",
)


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cpuid_mask.c compiled for LD_PRELOAD."""
    out = tmp_path_factory.mktemp("shim") / "cpuid_mask.so"
    source = str(BENCHMARKS / "cpuid_mask.c")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(out), source], check=True)
    return out


def cpuid_seen(shim: Path | None, mask: str = "") -> subprocess.CompletedProcess[str]:
    """Run a Python that reports what the CPUID instruction tells it, under the mask."""
    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS), "CPUID_MASK": mask}
    if shim is not None:
        env["LD_PRELOAD"] = str(shim)
    code = "import json, isa_probe_timing as t; print(json.dumps(t.cpuid_flags()))"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_without_a_mask_cpuid_agrees_with_the_kernel(shim: Path) -> None:
    flags = json.loads(cpuid_seen(shim).stdout)
    assert flags["avx2"] == ("avx2" in cpu_flags())
    assert flags["avx512f"] == ("avx512f" in cpu_flags())


def test_the_avx2_mask_hides_avx512_and_vnni_but_keeps_avx2_and_fma(shim: Path) -> None:
    flags = json.loads(cpuid_seen(shim, "avx2").stdout)
    assert flags["avx2"] == ("avx2" in cpu_flags())
    assert flags["fma"] == ("fma" in cpu_flags())
    assert not any(flags[f] for f in ("avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"))


def test_the_avx2_vnni_mask_keeps_avx_vnni_only(shim: Path) -> None:
    flags = json.loads(cpuid_seen(shim, "avx2_vnni").stdout)
    assert flags["avx_vnni"] == ("avx_vnni" in cpu_flags())
    assert not flags["avx512f"]
    assert not flags["avx512_vnni"]


def test_an_unknown_mask_stops_the_process_with_a_message(shim: Path) -> None:
    done = cpuid_seen(shim, "avx9")
    assert done.returncode == 2
    assert "unknown CPUID_MASK avx9" in done.stderr
