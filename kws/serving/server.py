"""Start KServe's ModelServer with the kws model, our routes and the registry poller."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import warnings
from typing import Any

from kws.inference import serve_single_threaded
from kws.serving.model import KwsModel
from kws.serving.settings import ServeSettings

log = logging.getLogger(__name__)


def import_kserve() -> Any:
    """Import kserve without letting its module-level argparse read our command line."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve
        import kserve.model_server  # parses sys.argv once, at import
    finally:
        sys.argv = argv
    return kserve


def build_model(settings: ServeSettings) -> KwsModel:
    """The model, loaded (raises a KwsError naming the problem if it cannot be)."""
    import_kserve()
    model = KwsModel(
        settings.name,
        settings.model_uri,
        settings.limits,
        settings.num_threads,
        settings.drift_window,
    )
    model.load()
    return model


class RegistryPoller(threading.Thread):
    """Reload when the served registry alias moves; a failed check or load keeps the model."""

    def __init__(self, model: KwsModel, interval: float) -> None:
        super().__init__(name="kws-registry-poller", daemon=True)
        self.model = model
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.model.reload_if_moved()
            except Exception as exc:  # keep serving whatever happens upstream
                log.warning(
                    "registry poll failed, still serving v%s: %s",
                    self.model.snapshot().ref.version,
                    exc,
                )


def serve(settings: ServeSettings) -> None:
    """Load the model and serve it in this process until SIGINT/SIGTERM."""
    model, server = prepare(settings)
    log_start(model, settings)
    use_uvloop()
    server.start([model])


def use_uvloop() -> None:
    """Run the server on uvloop when it is installed, as uvicorn's own runner does.

    KServe's ModelServer.start() calls asyncio.run() itself, which ignores uvicorn's loop
    setting: without this a one-process server ran on the slower stock asyncio loop, unlike
    the workers of `--workers N` (uvicorn's runner).
    """
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())  # KServe asks for a current loop first


def prepare(settings: ServeSettings, worker: Any = None) -> tuple[KwsModel, Any]:
    """The loaded model with our routes on KServe's app and its ModelServer; the poller runs."""
    kserve = import_kserve()
    from kserve.model_server import app

    # both import kserve.model_server, which parses sys.argv at import: after import_kserve()
    from kws.serving.dataplane import KwsDataPlane
    from kws.serving.routes import install  # see the comment above

    serve_single_threaded()
    model = build_model(settings)
    install(app, model, worker)
    server = kserve.ModelServer(
        http_port=settings.port,
        workers=1,  # several workers are ours (kws.serving.workers), not KServe's
        enable_grpc=False,
        enable_docs_url=False,  # /docs is ours, FastAPI's app was built without it
        enable_latency_logging=False,
    )
    server.dataplane = KwsDataPlane(model_registry=server.registered_models)
    # KServe's app defaults to FastAPI's ORJSONResponse, which now warns on every first use
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    if not settings.access_log:
        logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # one line per request
    if settings.poll_seconds > 0 and settings.model_uri.startswith("models:/"):
        RegistryPoller(model, settings.poll_seconds).start()
    return model, server


def log_start(model: KwsModel, settings: ServeSettings) -> None:
    """One line: what is served, from where, on which port."""
    ref = model.snapshot().ref
    log.info(
        "serving %s v%s (%s) on port %d", ref.name, ref.version, settings.model_uri, settings.port
    )
