"""`kws serve --workers N`: N server processes sharing one listening socket.

KServe's own `workers` option cannot carry this server: its children are started with
`spawn` and import `kserve.model_server:app` afresh, so the routes, middleware and /metrics
that `kws.serving.routes.install` put on the parent's app are missing there; the models are
pickled into the children (a TFLite interpreter is not picklable) and no registry poller
runs in them. So the supervisor here binds the port once and starts N workers with `spawn`;
each worker is a whole single-process server (it loads the model, installs our routes, polls
the registry) and accepts connections on the inherited socket, the way KServe's and uvicorn's
children do (`RESTServer.run(sockets)`). The kernel hands each new connection to one worker,
and a request is answered by the one snapshot of that worker's model.

Metrics: the supervisor points PROMETHEUS_MULTIPROC_DIR to an empty folder before any worker
starts, so prometheus_client shares counters and histograms between workers (see
kws.serving.metrics). A worker that dies is replaced; its counters stay counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from kws.drift import MIN_REQUESTS
from kws.errors import KwsError
from kws.serving.settings import ServeSettings

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STARTUP_SECONDS = 300.0  # a worker loads the model from the registry before it says ready
STOP_SECONDS = 30.0  # graceful shutdown of a worker before it is killed
READY, FAILED = "ready", "failed"
_PR_SET_PDEATHSIG = 1


class WorkerStartError(KwsError):
    """A worker could not start (its model did not load, the port is taken...)."""


def bind(port: int) -> socket.socket:
    """The listening socket all workers accept on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", port))
    except OSError as exc:
        sock.close()
        raise WorkerStartError(f"cannot listen on port {port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def metrics_folder() -> tuple[Path, bool]:
    """The multiprocess metrics folder, emptied; True if we made it (and remove it at exit)."""
    given = os.environ.get(MULTIPROC_ENV)
    if not given:
        return Path(tempfile.mkdtemp(prefix="kws-metrics-")), True
    folder = Path(given)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("*.db"), *folder.glob("kws_worker_*")]:  # a previous run's
        stale.unlink()
    return folder, False


def worker_settings(settings: ServeSettings) -> ServeSettings:
    """One worker's share: the drift window split so that the workers' windows add up to it."""
    from dataclasses import replace

    return replace(settings, drift_window=math.ceil(settings.drift_window / settings.workers))


def supervise(settings: ServeSettings) -> None:
    """Start settings.workers workers, replace any that dies, stop them all on SIGTERM/SIGINT."""
    sock = bind(settings.port)
    folder, owned = metrics_folder()
    os.environ[MULTIPROC_ENV] = str(folder)  # inherited by the workers, read at their import
    multiprocessing.allow_connection_pickling()
    context = multiprocessing.get_context("spawn")
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: stopping.append(number))
    workers: list[tuple[BaseProcess, Connection]] = []
    try:
        workers = [_start(context, settings, sock) for _ in range(settings.workers)]
        for process, channel in workers:
            _wait_ready(process, channel, stopping)
        log.info(
            "%d workers serving on port %d (pids %s)",
            len(workers),
            settings.port,
            ", ".join(str(p.pid) for p, _ in workers),
        )
        while not stopping:
            time.sleep(0.5)
            for index, (process, channel) in enumerate(workers):
                if not process.is_alive() and not stopping:
                    channel.close()
                    log.warning(
                        "worker %s exited (code %s): starting another",
                        process.pid,
                        process.exitcode,
                    )
                    _forget(folder, process.pid)
                    workers[index] = _start(context, settings, sock)
    finally:
        _stop_all([p for p, _ in workers])
        sock.close()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


def _start(context: Any, settings: ServeSettings, sock: socket.socket) -> tuple[Any, Connection]:
    ours, theirs = context.Pipe(duplex=False)
    process = context.Process(
        target=run_worker, args=(settings, sock, theirs), name="kws-serve-worker"
    )
    process.start()
    theirs.close()
    return process, ours


def _wait_ready(process: BaseProcess, channel: Connection, stopping: list[int]) -> None:
    """Wait for a worker's model to load; raise its error if it fails."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and not stopping:
        if channel.poll(0.2):
            try:
                status, message = channel.recv()
            except EOFError:
                status, message = FAILED, f"worker {process.pid} exited while starting"
            if status == READY:
                return
            raise WorkerStartError(message)
        if not process.is_alive():
            raise WorkerStartError(f"worker {process.pid} exited while starting")
    if not stopping:
        raise WorkerStartError(f"worker {process.pid} did not start in {STARTUP_SECONDS:g} s")


def _stop_all(processes: list[BaseProcess]) -> None:
    """SIGTERM to every worker (uvicorn drains its connections), then SIGKILL the late ones."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("worker %s did not stop in %g s: killed", process.pid, STOP_SECONDS)
            process.kill()
            process.join()


def _forget(folder: Path, pid: int | None) -> None:
    """Drop a dead worker's live gauges and state (its counters stay: they were counted)."""
    from prometheus_client import multiprocess

    if pid is None:
        return
    multiprocess.mark_process_dead(pid, str(folder))
    (folder / f"kws_worker_{pid}.json").unlink(missing_ok=True)


# --- in the worker process ---------------------------------------------------------------
def run_worker(settings: ServeSettings, sock: socket.socket, channel: Connection) -> None:
    """One worker: load the model, tell the supervisor, serve on the shared socket."""
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from kws.serving import metrics  # after PROMETHEUS_MULTIPROC_DIR: multiprocess values
    from kws.serving.server import log_start, prepare  # KServe: in the worker only

    state = metrics.start_worker_state(min(MIN_REQUESTS, settings.drift_window))
    try:
        model, server = prepare(worker_settings(settings), state)
    except KwsError as exc:
        channel.send((FAILED, str(exc)))
        raise SystemExit(3) from None
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    server.register_model(model)
    rest = RESTServer(
        FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        settings.port,
        workers=1,
        grace_period=server.grace_period,
        timeout_keep_alive=server.timeout_keep_alive,
    )
    channel.send((READY, ""))
    channel.close()
    log_start(model, settings)
    rest.run(sockets=[sock])  # what KServe's own worker processes run; returns on SIGTERM


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the supervisor dies, so no worker is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
