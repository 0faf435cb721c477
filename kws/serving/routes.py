"""Routes added to KServe's FastAPI app: /predict, /admin/reload, /noop, /docs; limits; metrics."""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kws.errors import KwsError
from kws.serving import decode, metrics, multipart
from kws.serving.decode import InputRejected
from kws.serving.model import KwsModel, classify_then_record

ADMIN_TOKEN_ENV = "KWS_ADMIN_TOKEN"
PREDICT_PATH = "/predict"
UPLOAD_FIELD = "file"  # the multipart field /predict reads the WAV from
PROTOCOL_BODY_FACTOR = 4  # JSON protocols carry base64 or float text: allow 4x the upload limit
VERSION_KEY = "kws_model_version"
WORKER_HEADER = "x-kws-worker"  # the pid of the worker process that answered


class ORJSONResponse(JSONResponse):
    """JSON via orjson (FastAPI deprecated its own class of this name)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class TopK(BaseModel):
    label: str
    probability: float


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str | None = None


class PredictResponse(BaseModel):
    """What /predict answers."""

    label: str = Field(description="the most likely keyword")
    confidence: float = Field(description="its probability")
    top_k: list[TopK]
    model: ModelInfo = Field(description="the model version that answered")
    latency_ms: float = Field(description="server-side time for this request")


class ErrorResponse(BaseModel):
    error: str


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in {
        400: "malformed request",
        413: "upload larger than the limit",
        415: "not a WAV upload",
        422: "audio that cannot be decoded, or is too long",
    }.items()
}


def error(status: int, message: str) -> ORJSONResponse:
    """The one error shape of the service."""
    return ORJSONResponse({"error": message}, status_code=status)


def install(app: FastAPI, model: KwsModel, worker: metrics.WorkerState | None = None) -> None:
    """Add our routes, error handlers and middleware to KServe's app (before it starts).

    With a worker state (several processes), /metrics aggregates all workers; it is added
    before KServe's own /metrics, which only knows this process, so ours answers.
    """
    app.add_middleware(ServiceMiddleware, model=model)
    app.router.on_startup.append(lambda: _drop_timing_middleware(app))
    app.add_exception_handler(InputRejected, _input_rejected)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.post(
        PREDICT_PATH,
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra=_PREDICT_BODY,
        summary="Keyword in a WAV file",
        description="Upload a WAV as multipart field `file`, or as the raw body with "
        "`Content-Type: audio/wav`. Any sample rate, bit depth and channel count.",
        tags=["kws"],
    )
    async def predict(request: Request) -> ORJSONResponse:
        start = time.perf_counter()
        data = await _upload(request)
        if isinstance(data, ORJSONResponse):
            return data
        served = model.snapshot()
        request.state.kws_model_version = served.ref.version
        try:
            prediction, bookkeeping = classify_then_record(served, decode.wav(data), model.limits)
        except InputRejected as exc:
            return error(exc.status, str(exc))
        body = {
            **prediction.to_dict(model.limits.top_k),
            "model": served.ref.to_dict(),
            "latency_ms": round((time.perf_counter() - start) * 1000, 3),
        }
        return ORJSONResponse(body, background=BackgroundTask(_after_response, bookkeeping))

    @app.post(
        "/admin/reload",
        tags=["kws"],
        responses={**_ERRORS, 409: {"model": ErrorResponse, "description": "several workers"}},
        summary="Reload the model",
    )
    async def reload(request: Request) -> ORJSONResponse:
        denied = _check_token(request)
        if denied is not None:
            return denied
        if worker is not None:  # it would reload this worker only: versions would differ
            return error(
                409,
                "this server runs several workers and a reload reaches one of them: move the "
                "registry alias instead (every worker follows it), or serve with --workers 1",
            )
        uri = await _reload_target(request)
        if isinstance(uri, ORJSONResponse):
            return uri
        try:
            previous, current = await asyncio.to_thread(model.reload, uri)
        except KwsError as exc:
            return ORJSONResponse(
                {
                    "error": f"reload failed, still serving the old model: {exc}",
                    "model": model.snapshot().ref.to_dict(),
                },
                status_code=422,
            )
        except Exception as exc:  # registry or storage unreachable: an upstream failure
            return ORJSONResponse(
                {
                    "error": f"reload failed, still serving the old model: {exc}",
                    "model": model.snapshot().ref.to_dict(),
                },
                status_code=502,
            )
        return ORJSONResponse(
            {"status": "reloaded", "previous": previous.to_dict(), "model": current.to_dict()}
        )

    if worker is not None:
        registry = metrics.multiprocess_registry(worker)

        @app.get("/metrics", include_in_schema=False)
        async def all_workers_metrics() -> Response:
            body = await asyncio.to_thread(metrics.render, registry)
            return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/noop", include_in_schema=False)
    async def noop() -> ORJSONResponse:
        """The HTTP floor for benchmarks: the same server, no work."""
        return ORJSONResponse({"ok": True})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="kws inference service")


def _drop_timing_middleware(app: FastAPI) -> None:
    """Remove KServe's timing_asgi middleware: it only feeds a trace log we keep off.

    It calls getrusage() twice per request, which was 20% of the server's time under load
    (profiled with py-spy). Runs at startup, after KServe added its middleware.
    """
    kept = [m for m in app.user_middleware if getattr(m.cls, "__name__", "") != "TimingMiddleware"]
    if len(kept) != len(app.user_middleware):
        app.user_middleware[:] = kept
        app.middleware_stack = None  # rebuilt on the next request, without it


async def _upload(request: Request) -> bytes | ORJSONResponse:
    """The WAV bytes of a /predict request, or the error response."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        upload_bytes = multipart.file_field(await request.body(), content_type, UPLOAD_FIELD)
        if upload_bytes is not None:
            return upload_bytes
        try:  # anything else, on the body read above: Starlette's general form parser
            form = await request.form(max_files=1, max_fields=8)
        except Exception as exc:  # starlette raises HTTPException or MultiPartException
            return error(400, f"malformed multipart body ({getattr(exc, 'detail', exc)})")
        upload = form.get(UPLOAD_FIELD)
        if not isinstance(upload, UploadFile):
            return error(422, "multipart upload needs a file in the field 'file'")
        return await upload.read()
    if media.startswith("audio/") or media == "application/octet-stream":
        return await request.body()
    return error(
        415,
        f"send a WAV as multipart field 'file' or as the raw body with Content-Type audio/wav "
        f"(got {media or 'no Content-Type'})",
    )


def _check_token(request: Request) -> ORJSONResponse | None:
    expected = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not expected:
        return error(403, f"the admin API is disabled: set {ADMIN_TOKEN_ENV} on the server")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        return error(401, "missing or wrong bearer token")
    return None


async def _reload_target(request: Request) -> str | ORJSONResponse | None:
    """The optional {"model": URI} of a reload request."""
    body = await request.body()
    if not body.strip():
        return None
    try:
        payload = orjson.loads(body)
    except ValueError:
        return error(400, 'the body must be empty or JSON {"model": "<uri>"}')
    if not isinstance(payload, dict) or not isinstance(payload.get("model", ""), str):
        return error(400, 'the body must be empty or JSON {"model": "<uri>"}')
    return payload.get("model") or None


async def _input_rejected(_: Request, exc: Exception) -> ORJSONResponse:
    return error(getattr(exc, "status", 422), str(exc))


async def _http_error(_: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error(exc.status_code, str(exc.detail))


async def _validation_error(_: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error(422, f"invalid request: {where}: {first.get('msg', 'invalid')}")


async def _after_response(call: Callable[[], None]) -> None:
    """Run call on the event loop once the response is sent (Starlette would hand a plain
    function to a worker thread: a thread switch costs more than the call)."""
    call()


class ServiceMiddleware:
    """Body-size limit (413 before reading) and request metrics, for every route."""

    def __init__(self, app: ASGIApp, model: KwsModel) -> None:
        self.app = app
        self.model = model
        self.worker = (WORKER_HEADER.encode(), str(os.getpid()).encode())

    def limit(self, path: str) -> int:
        """Upload limit for a path: raw WAV on /predict, JSON-encoded audio elsewhere."""
        base = self.model.limits.max_upload_bytes
        return base if path == PREDICT_PATH else base * PROTOCOL_BODY_FACTOR

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", ()), self.worker]
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                limit = self.limit(scope["path"])
                declared = _header(scope, b"content-length")
                if declared is None:  # chunked: read it here, up to the limit, then replay
                    receive, declared = await _buffered(receive, limit)
                if declared.isdigit() and int(declared) > limit:
                    response = error(413, f"upload is {declared} bytes; the limit is {limit}")
                    await response(scope, receive, send_recording)
                    return
            await self.app(scope, receive, send_recording)
        finally:
            self._record(scope, status["code"], start)

    def _record(self, scope: Scope, status: int, start: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", "unmatched")
        version = (scope.get("state") or {}).get(VERSION_KEY)
        if version is None:
            served = self.model._served
            version = served.ref.version if served else "none"
        metrics.REQUESTS.labels(route=path, status=str(status), model_version=version).inc()
        metrics.LATENCY.labels(route=path).observe(time.perf_counter() - start)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _buffered(receive: Receive, limit: int) -> tuple[Receive, str]:
    """Read a body of unknown length (up to limit + 1 bytes); return a replaying receive."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit or not message.get("more_body", False):
            break
    replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replaying() -> Message:
        return replay.pop() if replay else await receive()

    return replaying, str(size)
