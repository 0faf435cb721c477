"""Serving benchmark: kws serve (/predict, V2 infer, no-op floor) vs `mlflow models serve`.

Both servers serve the same registered version with the same number of worker processes
(default: one per usable core, the sizing rule of `kws serve --workers`) on this machine;
load comes from wrk (Debian package `wrk`), a C load generator, so the client costs little
CPU. Reports p50/p99 latency and throughput at concurrency 1 and 8; the in-process cost of
one request (WAV decode, log-mel, TFLite on one thread, response JSON: the /predict path
without HTTP), measured in the same run, and the compute bound it sets (cores / cost); and
the resident memory of all the kws server's processes after warm-up and after 20,000
/predict requests.

    python benchmarks/serve.py                       # the champion of ./mlflow.db
    python benchmarks/serve.py --model models:/kws/2 --seconds 20 --workers 2
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import record

BIN = Path(sys.executable).parent
MEMORY_REQUESTS = 20_000
IN_PROCESS_RUNS = 2_000
TARGETS = {"p50_ms_c1": 1.5, "vs_mlflow": 3.0, "vs_bound": 0.8, "memory_growth": 0.05}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(command: list[str], ready_url: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a server and wait until ready_url answers 200."""
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[0]} exited; its log:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{ready_url} did not answer within 180 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            pids += tree(int(child))
    return pids


def tree_rss_mb(pid: int) -> tuple[float, int]:
    """Resident memory of a server: its process and every worker (MiB), and how many."""
    pids = tree(pid)
    return sum(rss_mb(p) for p in pids), len(pids)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a server: its process and every worker."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for process in tree(pid):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one target: median latency, throughput and CPU; all requests, errors."""
    return {
        **{
            key: round(statistics.median(float(r[key]) for r in results), 3)
            for key in ("p50_ms", "p99_ms", "rps", "server_cpu_ms")
        },
        "requests": sum(int(r["requests"]) for r in results),
        "errors": sum(int(r["errors"]) for r in results),
        "socket_errors": "; ".join(r["socket_errors"] for r in results if r["socket_errors"]),
        "rounds": len(results),
    }


def in_process_ms(model: str, wav: bytes, runs: int = IN_PROCESS_RUNS) -> dict[str, float]:
    """Cost (ms) of one /predict request without HTTP, on one thread: median wall time (the
    compute bound's), and for context its 10th percentile and median CPU time (other
    processes on the machine stretch wall time, not CPU time).

    The route's own work: decode the WAV, check it, input/drift statistics and metrics,
    log-mel, TFLite, the response dict and its JSON, as kws.serving.routes.predict does.
    """
    import orjson

    from kws.inference import serve_single_threaded
    from kws.serving import decode
    from kws.serving.model import classify
    from kws.serving.source import load

    serve_single_threaded()
    served = load(model, "kws", num_threads=1)
    limits = decode.Limits()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        prediction = classify(served, decode.wav(wav), limits)
        body = {
            **prediction.to_dict(limits.top_k),
            "model": served.ref.to_dict(),
            "latency_ms": round((time.perf_counter() - start) * 1000, 3),
        }
        orjson.dumps(body)
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    wall.sort()
    return {
        "median": statistics.median(wall) * 1000,
        "p10": wall[len(wall) // 10] * 1000,
        "cpu_median": statistics.median(cpu) * 1000,
    }


def lua_script(folder: Path, name: str, method: str, body: bytes, headers: dict[str, str]) -> Path:
    """A wrk script sending one fixed request."""
    body_file = folder / f"{name}.body"
    body_file.write_bytes(body)
    lines = [f'wrk.method = "{method}"']
    if body:
        lines += [
            f'local f = io.open("{body_file}", "rb")',
            "wrk.body = f:read('*a')",
            "f:close()",
        ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script = folder / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(url: str, script: Path, concurrency: int, seconds: int) -> dict[str, Any]:
    """Run wrk; return p50/p99 (ms), requests/s, request count and errors."""
    threads = min(concurrency, 2)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if match is None:
            raise RuntimeError(f"wrk printed no {pct}% latency:\n{out}")
        return float(match[1]) * _UNITS[match[2]]

    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "p50_ms": round(latency("50"), 3),
        "p99_ms": round(latency("99"), 3),
        "rps": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), 1),  # type: ignore[index]
        "requests": requests,
        "errors": int(errors[1]) if errors else 0,
        "socket_errors": socket_errors[1].strip() if socket_errors else "",
    }


def v2_binary_body(wav: bytes) -> tuple[bytes, int]:
    """An Open Inference Protocol request carrying the WAV as a binary BYTES tensor."""
    tensor = len(wav).to_bytes(4, "little") + wav
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "audio",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ]
        }
    ).encode()
    return header + tensor, len(header)


def check_once(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """One request before the load, so a broken route fails loudly instead of timing errors."""
    request = urllib.request.Request(url, data=body or None, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/kws@champion", help="registry URI to serve")
    parser.add_argument("--wav", type=Path, default=None, help="request WAV (default: FSDD)")
    parser.add_argument("--seconds", type=int, default=5, help="per measurement and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per target")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="per server"
    )
    parser.add_argument("--name", default="serve", help="results file name")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("error: this benchmark needs wrk (apt-get install wrk)")

    from kws.serving.source import parse_registry_uri, registry_version
    from kws.tracking import configure

    tracking = configure()
    parsed = parse_registry_uri(args.model)
    if parsed is None:
        raise SystemExit("error: --model must be a registry URI (models:/kws@champion)")
    version = registry_version(args.model)
    pinned = f"models:/{parsed[0]}/{version}"
    wav_path = args.wav or fsdd_wav()
    wav = wav_path.read_bytes()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # kws serve makes its own
    load_before = os.getloadavg()
    cost = in_process_ms(pinned, wav)
    print(f"in-process cost of one request (ms): {cost}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kws-bench-serve-") as scratch:
        folder = Path(scratch)
        kws_port, mlflow_port = free_port(), free_port()
        kws = start(
            [
                str(BIN / "kws"),
                "serve",
                "--model",
                pinned,
                "--port",
                str(kws_port),
                "--poll",
                "0",
                "--threads",
                "1",
                "--workers",
                str(args.workers),
            ],
            f"http://127.0.0.1:{kws_port}/v2/health/ready",
            folder / "kws.log",
            env,
        )
        mlflow = start(
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                pinned,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                str(args.workers),
            ],
            f"http://127.0.0.1:{mlflow_port}/ping",
            folder / "mlflow.log",
            env,
        )
        try:
            kws_url, mlflow_url = f"http://127.0.0.1:{kws_port}", f"http://127.0.0.1:{mlflow_port}"
            v2_body, v2_json = v2_binary_body(wav)
            mlflow_body = json.dumps(
                {
                    "dataframe_split": {
                        "columns": ["audio"],
                        "data": [[base64.b64encode(wav).decode()]],
                    }
                }
            ).encode()
            targets = {
                "kws /predict": (f"{kws_url}/predict", "POST", wav, {"Content-Type": "audio/wav"}),
                "kws V2 infer": (
                    f"{kws_url}/v2/models/kws/infer",
                    "POST",
                    v2_body,
                    {
                        "Content-Type": "application/octet-stream",
                        "Inference-Header-Content-Length": str(v2_json),
                    },
                ),
                "kws no-op floor": (f"{kws_url}/noop", "GET", b"", {}),
                "mlflow /invocations": (
                    f"{mlflow_url}/invocations",
                    "POST",
                    mlflow_body,
                    {"Content-Type": "application/json"},
                ),
            }
            for url, _, body, headers in targets.values():
                check_once(url, body, headers)
            scripts = {
                name: lua_script(folder, f"s{i}", method, body, headers)
                for i, (name, (_, method, body, headers)) in enumerate(targets.items())
            }
            predict_url, predict_script = targets["kws /predict"][0], scripts["kws /predict"]
            warm = wrk(predict_url, predict_script, 8, 3)
            rss_warm, processes = tree_rss_mb(kws.pid)
            predict_requests = 0
            rows = []
            owners = {n: mlflow.pid if n.startswith("mlflow") else kws.pid for n in targets}
            for concurrency in (1, 8):
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
                for _ in range(args.rounds):  # interleaved: load from others hits all alike
                    for name, script in scripts.items():
                        cpu_before = tree_cpu_seconds(owners[name])
                        result = wrk(targets[name][0], script, concurrency, args.seconds)
                        cpu = tree_cpu_seconds(owners[name]) - cpu_before
                        result["server_cpu_ms"] = round(cpu * 1000 / max(result["requests"], 1), 3)
                        runs[name].append(result)
                        if name == "kws /predict":
                            predict_requests += int(result["requests"])
                        print(f"{name:22s} c={concurrency}: {result}", flush=True)
                rows += [
                    {"target": name, "concurrency": concurrency, **median_run(results)}
                    for name, results in runs.items()
                ]
            while predict_requests < MEMORY_REQUESTS:
                extra = wrk(predict_url, predict_script, 8, 5)
                predict_requests += int(extra["requests"])
            rss_after, _ = tree_rss_mb(kws.pid)
        finally:
            stop(kws)
            stop(mlflow)

    measured = {
        "in_process_ms": round(cost["median"], 3),
        "in_process_ms_p10": round(cost["p10"], 3),
        "in_process_cpu_ms": round(cost["cpu_median"], 3),
        "rss_mb_warm": round(rss_warm, 1),
        "rss_mb_after": round(rss_after, 1),
        "kws_processes": processes,
        "predict_requests_between": predict_requests,
        "warm_up_requests": warm["requests"],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    result = summarise(rows, measured, pinned, wav_path, args)
    record(args.name, result, markdown(result))
    print(markdown(result))


def fsdd_wav() -> Path:
    """The default request: an FSDD recording (KWS_FSDD_SOURCE, else the project's data/)."""
    roots = [os.environ.get("KWS_FSDD_SOURCE", ""), "data/raw/fsdd"]
    for root in filter(None, roots):
        for candidate in (Path(root) / "recordings", Path(root)):
            if (candidate / "3_jackson_0.wav").is_file():
                return candidate / "3_jackson_0.wav"
    raise SystemExit("error: no FSDD recording found: pass --wav or set KWS_FSDD_SOURCE")


def summarise(
    rows: list[dict[str, Any]],
    measured: dict[str, Any],
    model: str,
    wav: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Ratios against the targets."""
    by = {(r["target"], r["concurrency"]): r for r in rows}
    cores = len(os.sched_getaffinity(0))
    bound = cores * 1000 / measured["in_process_ms"]
    predict_c8 = by[("kws /predict", 8)]["rps"]
    checks = {
        "predict_p50_ms_c1": by[("kws /predict", 1)]["p50_ms"],
        "v2_p50_ms_c1": by[("kws V2 infer", 1)]["p50_ms"],
        "in_process_ms": measured["in_process_ms"],
        "compute_bound_rps": round(bound, 1),
        "predict_rps_c8": predict_c8,
        "mlflow_rps_c8": by[("mlflow /invocations", 8)]["rps"],
        "predict_vs_bound_c8": round(predict_c8 / bound, 3),
        "predict_vs_mlflow_c8": round(predict_c8 / by[("mlflow /invocations", 8)]["rps"], 2),
        "predict_vs_mlflow_c1": round(
            by[("kws /predict", 1)]["rps"] / by[("mlflow /invocations", 1)]["rps"], 2
        ),
        "predict_vs_floor_c8": round(predict_c8 / by[("kws no-op floor", 8)]["rps"], 3),
        "predict_server_cpu_ms_c8": by[("kws /predict", 8)]["server_cpu_ms"],
        "mlflow_server_cpu_ms_c8": by[("mlflow /invocations", 8)]["server_cpu_ms"],
        # what the ratios would be on cores of our own: CPU per request, not shares of CPU
        "predict_vs_mlflow_cpu_c8": round(
            by[("mlflow /invocations", 8)]["server_cpu_ms"]
            / by[("kws /predict", 8)]["server_cpu_ms"],
            2,
        ),
        "predict_vs_bound_cpu_c8": round(
            measured["in_process_cpu_ms"] / by[("kws /predict", 8)]["server_cpu_ms"], 3
        ),
        **{k: v for k, v in measured.items() if k != "in_process_ms"},
        "rss_growth": round(measured["rss_mb_after"] / measured["rss_mb_warm"] - 1, 4),
    }
    passed = {
        "/predict p50 <= 1.5 ms at c=1": checks["predict_p50_ms_c1"] <= TARGETS["p50_ms_c1"],
        ">= 3x mlflow models serve throughput (c=8, same workers)": checks["predict_vs_mlflow_c8"]
        >= TARGETS["vs_mlflow"],
        ">= 80% of the compute bound (c=8)": checks["predict_vs_bound_c8"] >= TARGETS["vs_bound"],
        "RSS growth <= 5% over 20k requests": checks["rss_growth"] <= TARGETS["memory_growth"],
    }
    return {
        "model": model,
        "wav": wav.name,
        "seconds": args.seconds,
        "workers": args.workers,
        "rounds": args.rounds,
        "cores": cores,
        "rows": rows,
        "checks": checks,
        "targets_met": passed,
    }


def markdown(result: dict[str, Any]) -> str:
    """The results table."""
    lines = [
        f"Model `{result['model']}`, request WAV `{result['wav']}`, {result['seconds']} s per "
        f"measurement, load from wrk on the same machine, {result['workers']} worker processes "
        f"per server on {result['cores']} cores (kws: `--workers {result['workers']} --threads "
        f"1`; mlflow: `--workers {result['workers']}`). Compute bound = cores / in-process "
        "cost of one request (the /predict work without HTTP, one thread, median of "
        f"{IN_PROCESS_RUNS} runs in this run). Each row: the median of {result['rounds']} "
        "interleaved rounds. Server CPU: user + system time of all the server's processes "
        "per request (robust to other load on the machine). RSS: all processes of the kws "
        "server.",
        "",
        "| target | concurrency | p50 ms | p99 ms | req/s | server CPU ms/request | requests "
        "| errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        errors = f"{r['errors']} {r['socket_errors']}".strip()
        lines.append(
            f"| {r['target']} | {r['concurrency']} | {r['p50_ms']} | {r['p99_ms']} | {r['rps']} "
            f"| {r['server_cpu_ms']} | {r['requests']} | {errors} |"
        )
    lines += ["", "| check | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["checks"].items()]
    lines += ["", "| target | met |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in result["targets_met"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
