"""`kws serve`: the KServe ModelServer with /predict, V1, V2, /metrics and hot swap."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from kws.drift import DEFAULT_WINDOW  # light: numpy only
from kws.serving.decode import Limits  # light: numpy only, no KServe

DEFAULTS = Limits()


def serve(
    model: str = typer.Option(
        "models:/kws@champion",
        envvar="KWS_MODEL_URI",
        help="Package folder, models:/kws@champion, models:/kws/3 or s3://... (env KWS_MODEL_URI).",
    ),
    port: int = typer.Option(8080, envvar="KWS_PORT", help="HTTP port."),
    name: str = typer.Option("kws", envvar="KWS_MODEL_NAME", help="Model name in V1/V2 routes."),
    max_upload: int = typer.Option(
        DEFAULTS.max_upload_bytes,
        min=1024,
        envvar="KWS_MAX_UPLOAD_BYTES",
        help="Upload limit of /predict (bytes).",
    ),
    max_seconds: float = typer.Option(
        DEFAULTS.max_seconds,
        min=0.1,
        envvar="KWS_MAX_SECONDS",
        help="Longest audio accepted (seconds).",
    ),
    top_k: int = typer.Option(
        DEFAULTS.top_k, min=1, envvar="KWS_TOP_K", help="Classes listed per prediction."
    ),
    poll: float = typer.Option(
        30.0,
        envvar="KWS_POLL_SECONDS",
        min=0,
        help="Seconds between registry alias checks (0: off).",
    ),
    access_log: bool = typer.Option(
        False, envvar="KWS_ACCESS_LOG", help="Log every request (metrics count them anyway)."
    ),
    threads: int = typer.Option(
        1, min=1, envvar="KWS_THREADS", help="TFLite threads per inference (per worker)."
    ),
    workers: int = typer.Option(
        1,
        min=0,
        envvar="KWS_SERVE_WORKERS",
        help="Server processes sharing the port, one per core (0: one per usable core). "
        "Size: workers = CPU cores allotted, --threads 1.",
    ),
    drift_window: int = typer.Option(
        DEFAULT_WINDOW,
        min=1,
        envvar="KWS_DRIFT_WINDOW",
        help="Recent requests the drift scores are computed over (kws_drift_score).",
    ),
) -> None:
    """Serve a model with KServe's ModelServer: /predict, V1, V2, /metrics (Ctrl-C stops).

    Every option also reads an environment variable; the admin API's token is the variable
    KWS_ADMIN_TOKEN only, never an option (it stays out of process listings).
    """
    from kws.serving.settings import ServeSettings  # light, like the imports above

    settings = ServeSettings(
        model_uri=model,
        name=name,
        port=port,
        limits=Limits(max_upload, max_seconds, top_k),
        poll_seconds=poll,
        access_log=access_log,
        num_threads=threads,
        drift_window=drift_window,
        workers=workers or usable_cores(),
    )
    if settings.workers > 1:
        # the supervisor imports no prometheus_client before it prepares the metrics folder
        from kws.serving.workers import supervise

        supervise(settings)
        return
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc_dir:  # prometheus_client writes there from its import on
        Path(multiproc_dir).mkdir(parents=True, exist_ok=True)
    from kws.serving.server import serve as run_server  # KServe: imported when serving starts

    run_server(settings)


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota."""
    import math

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))
