"""The TFLite graph variants timed as CPUs without AVX-512 would run them, on this host.

XNNPACK (through cpuinfo) and OpenBLAS pick their kernels from the CPUID instruction. The
shim benchmarks/cpuid_mask.c, preloaded into a process, turns on Linux's CPUID faulting and
answers every CPUID with the AVX-512, AMX and (for `avx2`) AVX-VNNI bits cleared, so the
runtime takes the kernels an AVX2 CPU would get, at native speed on the same cores. The
script:

1. builds the default model (params.yaml: architecture, clip length, n_mels) with the
   pretrained embedding and an untrained head, its normalisation fitted on log-mels of
   noise (latency does not depend on the weights), and converts it four ways
   (`kws.export.QUANTIZATIONS`: float32, float16 weights, dynamic-range int8, full int8);
2. compiles the shim with the C compiler (`cc`);
3. runs benchmarks/isa_probe_timing.py for every mask (native = unmasked; `avx2`: AVX2 +
   FMA, as Haswell .. Comet Lake and Zen 1-3; `avx2_vnni`: plus AVX-VNNI, as Alder Lake and
   later laptops) and every graph and the log-mel front end of one clip, one process each
   (several interpreters in one process disturb each other's timings), alternating masks
   and variants over --repeats rounds so that host load hits them alike; each process
   reports what CPUID showed it and the median and p99 ms per call (one thread, batch 1,
   rounds of calls as benchmarks/graph_variants.py);
4. writes results/<name>.md and .json.

Needs: Linux on x86-64 with CPUID faulting (/proc/cpuinfo flag cpuid_fault: Intel since Ivy
Bridge, also inside KVM guests) and a C compiler. Only the instruction sets are narrowed,
not the microarchitecture: an AVX2 laptop's cores, caches and clocks differ from this host's.
glibc picks its own string functions before the shim loads (not part of the timed kernels).

Usage (from the repo root):
  python benchmarks/isa_probe.py [--mask avx2 ...] [--repeats 3] [--params params.yaml]
      [--name isa_probe]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import INVOKES_PER_ROUND, RESULTS, ROUNDS, WARMUP, load_average, record

from kws.export import QUANTIZATIONS, to_tflite
from kws.features import log_mel_batch
from kws.model import build_model
from kws.params import Params, resolve_params

HERE = Path(__file__).resolve().parent
SHIM_SOURCE = HERE / "cpuid_mask.c"
TIMING_SCRIPT = HERE / "isa_probe_timing.py"
NATIVE = "native"
MASKS = ("avx2", "avx2_vnni")  # what cpuid_mask.c knows
LABELS = [str(digit) for digit in range(10)]
CALIBRATION_CLIPS = 32
# one thread also for numpy's BLAS: its default thread pool makes the front end's small matrix
# product ~10x slower on a busy host (16 against 1.3 ms per clip on 2 loaded cores)
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
FLAG_COLUMNS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def fail(message: str) -> NoReturn:
    """Stop with a one-line error."""
    sys.exit(f"error: {message}")


def check_host() -> str:
    """CPUID faulting available and a C compiler; the compiler."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        fail("no /proc/cpuinfo: this needs Linux")
    if "cpuid_fault" not in cpuinfo.split():
        fail("this CPU has no CPUID faulting (/proc/cpuinfo flag cpuid_fault): cannot mask CPUID")
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        fail(f"no C compiler {compiler!r} (install gcc, or set CC)")
    return compiler


def compile_shim(compiler: str, out: Path) -> Path:
    """cpuid_mask.c built as a shared library for LD_PRELOAD."""
    done = subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        fail(f"compiling {SHIM_SOURCE.name} failed: {done.stderr.strip().splitlines()[-1]}")
    return out


def build_graphs(params: Params, out_dir: Path) -> dict[str, int]:
    """The default model converted every way, written to out_dir; bytes of each graph."""
    fp = params.features
    rng = np.random.default_rng(params.seed)
    gains = 10 ** rng.uniform(-3, 0, size=(CALIBRATION_CLIPS, 1))
    clips = (gains * rng.standard_normal((CALIBRATION_CLIPS, fp.clip_samples))).astype(np.float32)
    features = log_mel_batch(clips, fp)
    model = build_model(params.model, (fp.n_frames, fp.n_mels), len(LABELS), features)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for quantization in QUANTIZATIONS:
        graph = to_tflite(model, quantization, features)
        (out_dir / f"{quantization}.tflite").write_bytes(graph)
        sizes[quantization] = len(graph)
    return sizes


def write_config(params: Params, graphs: Path, out: Path) -> Path:
    """The timing script's config: graphs, labels, feature parameters, rounds."""
    config = {
        "graphs": {q: str(graphs / f"{q}.tflite") for q in QUANTIZATIONS},
        "labels": LABELS,
        "features": params.features.__dict__,
        "rounds": ROUNDS,
        "invokes_per_round": INVOKES_PER_ROUND,
        "warmup": WARMUP,
    }
    out.write_text(json.dumps(config, indent=2))
    return out


def run_timing(mask: str, variant: str, shim: Path, config: Path) -> dict:
    """One timing process of one variant under the mask (native: no shim); its result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CPUID_MASK", "LD_PRELOAD"))}
    env |= ONE_THREAD
    if mask != NATIVE:
        env |= {"LD_PRELOAD": str(shim), "CPUID_MASK": mask, "CPUID_MASK_REPORT": "1"}
    done = subprocess.run(
        [sys.executable, str(TIMING_SCRIPT), str(config), variant],
        env=env,
        capture_output=True,
        text=True,
    )
    lines = done.stdout.splitlines()
    result = next((line for line in lines if line.startswith("ISA_PROBE_RESULT ")), None)
    if done.returncode != 0 or result is None:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        fail(f"the {mask} timing run of {variant} failed: {last}")
    figures = json.loads(result.split(" ", 1)[1])
    emulated = re.search(r"cpuid_mask: (\d+) CPUID instructions emulated", done.stderr)
    figures["cpuid_instructions_emulated"] = int(emulated.group(1)) if emulated else 0
    return figures


def summary(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per variant: the median of its runs' medians and the largest p99."""
    return {
        name: {
            "median": round(float(np.median([r["latency_ms"]["median"] for r in variant])), 3),
            "p99": max(r["latency_ms"]["p99"] for r in variant),
        }
        for name, variant in runs.items()
    }


def table(results: dict[str, dict], sizes: dict[str, int]) -> str:
    """Markdown: one row per mask and variant."""
    rows = [
        "| CPUID | " + " | ".join(FLAG_COLUMNS) + " | variant | file MB | median ms "
        "(median of runs; each run) | p99 ms (max) | vs float32 |",
        "|---|" + "---|" * len(FLAG_COLUMNS) + "---|---|---|---|---|",
    ]
    for mask, result in results.items():
        flags = result["runs"]["none"][0]["cpuid"]
        marks = " | ".join("yes" if flags[f] else "no" for f in FLAG_COLUMNS)
        float32 = result["summary"]["none"]["median"]
        for name, figures in result["summary"].items():
            runs = " / ".join(f"{r['latency_ms']['median']:.3f}" for r in result["runs"][name])
            graph = name in sizes
            size = f"{sizes[name] / 1e6:.3f}" if graph else ""
            ratio = f"{figures['median'] / float32:.2f}x" if graph else ""
            rows.append(
                f"| {mask} | {marks} | {name} | {size} | {figures['median']:.3f} ({runs}) | "
                f"{figures['p99']:.3f} | {ratio} |"
            )
    return "\n".join(rows)


def conclusion(results: dict[str, dict]) -> str:
    """One line per mask: each quantised graph's median against float32's."""
    lines = []
    for mask, result in results.items():
        medians = {name: figures["median"] for name, figures in result["summary"].items()}
        compared = ", ".join(
            f"{q} {medians[q]:.2f} ms = {medians[q] / medians['none']:.2f}x"
            for q in QUANTIZATIONS[1:]
        )
        lines.append(f"- {mask}: float32 {medians['none']:.2f} ms; {compared}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--mask", action="append", choices=MASKS, help="default: all")
    parser.add_argument("--repeats", type=int, default=3, help="timing processes per mask")
    parser.add_argument("--name", default="isa_probe")
    args = parser.parse_args()
    compiler = check_host()
    masks = [NATIVE, *(args.mask or MASKS)]
    start_load = load_average()
    params = resolve_params(args.params, args.sets)
    variants = [*QUANTIZATIONS, "front_end"]
    runs: dict[str, dict[str, list[dict]]] = {m: {v: [] for v in variants} for m in masks}
    with tempfile.TemporaryDirectory(prefix="isa-probe-") as tmp:
        shim = compile_shim(compiler, Path(tmp) / "cpuid_mask.so")
        sizes = build_graphs(params, Path(tmp) / "graphs")
        config = write_config(params, Path(tmp) / "graphs", Path(tmp) / "config.json")
        for _ in range(args.repeats):
            for variant in variants:
                for mask in masks:
                    run = run_timing(mask, variant, shim, config)
                    runs[mask][variant].append(run)
                    print(f"{mask} {variant}: {run['latency_ms']}", flush=True)
    results = {mask: {"runs": r, "summary": summary(r)} for mask, r in runs.items()}
    figures = {
        "load_average_at_start": start_load,
        "params_hash": params.digest(),
        "input_shape": [params.features.n_frames, params.features.n_mels],
        "tflite_bytes": sizes,
        "results": results,
    }
    fp = params.features
    markdown = (
        f"The default model's TFLite graph ({params.model.architecture}, {fp.clip_seconds} s "
        f"= {fp.n_frames} x {fp.n_mels} log-mel input) in each quantisation, and the log-mel "
        f"front end of one clip (front_end), timed with one thread (OPENBLAS_NUM_THREADS=1 "
        f"too), batch 1, {ROUNDS * INVOKES_PER_ROUND} calls after {WARMUP} warm-up calls in "
        f"each of {args.repeats} processes per variant and CPUID mask, one variant per process, "
        "masks and variants alternating. The flag columns are "
        "what the CPUID instruction answered inside each process (benchmarks/cpuid_mask.c "
        "clears the masked bits); the cores, caches and clocks stay this host's.\n\n"
        + table(results, sizes)
        + "\n\nMedian per invoke against float32 (below 1x: faster than float32):\n\n"
        + conclusion(results)
        + f"\n\n```json\n{json.dumps(figures, indent=2)}\n```"
    )
    record(args.name, figures, markdown)
    print(table(results, sizes))
    print(conclusion(results))
    print(f"results in {RESULTS / (args.name + '.md')}")


if __name__ == "__main__":
    main()
