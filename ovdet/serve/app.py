"""The FastAPI application of `ovdet serve`.

    app = create_app(lambda: ServedModels(Detector.from_pretrained("owlvit-b32")), ServeSettings())

Routes: POST /v1/detect, POST /v1/classify (multipart or JSON), GET /v1/model, GET /healthz,
GET /readyz, GET /metrics (Prometheus text), GET / (the web page), /static/*, /docs (OpenAPI).
Every answer other than 200 is JSON `{"error": stable_code, "message": text}`.

The models load in a background thread when the app starts, so /healthz answers at once and
/readyz says when the model is loaded; requests are then run by the `Batcher`'s worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..records import classification_record, image_record
from ..errors import ImageReadError, OvdetError, VocabularyError, first_line
from ..text import parse_classes, validate_vocabulary
from .batcher import Batcher, Job, QueueFull
from .limits import ApiError, ServeSettings, decode_image, too_large
from .metrics import Metrics

STATIC_DIR = Path(__file__).parent / "static"
ROUTES = ("/v1/detect", "/v1/classify", "/v1/model", "/healthz", "/readyz", "/metrics", "/", "/static", "/docs",
          "/openapi.json")
log = logging.getLogger("uvicorn.error")  # shown with uvicorn's own messages


@dataclass
class ServedModels:
    """What the server runs: a `Detector`, and optionally a `Classifier` for /v1/classify
    (name: what to report for it in /v1/model)."""

    detector: Any
    classifier: Any = None
    classifier_name: str | None = None


# -- request bodies ------------------------------------------------------------------------------
Names = list[str] | str  # a JSON list, or one comma-separated string (what multipart sends)


class DetectFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    classes: Names = Field(description='class names: ["cat", "dog"] or "cat,dog"')
    negatives: Names | None = Field(None, description="prompts that must not be reported (default: the model's)")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="score cut (default: the model's)")


class ClassifyFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    classes: Names = Field(description='class names: ["doctor", "nurse"] or "doctor,nurse"')
    top_k: int = Field(5, ge=1, description="classes listed in `top`")


class DetectJSON(DetectFields):
    image: str = Field(description="the image file, base64-encoded (a data: URL prefix is allowed)")
    filename: str = Field("image", description='echoed as "image" in the answer')


class ClassifyJSON(ClassifyFields):
    image: str = Field(description="the image file, base64-encoded (a data: URL prefix is allowed)")
    filename: str = Field("image", description='echoed as "image" in the answer')


def _request_body(fields: type[BaseModel], json_model: type[BaseModel]) -> dict:
    """OpenAPI requestBody for a route that takes multipart or JSON (parsed by hand, so FastAPI
    cannot infer it)."""
    form = fields.model_json_schema()
    form["properties"] = {"image": {"type": "string", "format": "binary"}, **form["properties"]}
    form["required"] = ["image", *form.get("required", [])]
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": form},
        "application/json": {"schema": json_model.model_json_schema()},
    }}}


ERRORS = {code: {"description": text} for code, text in {
    400: "unreadable_image, bad_classes, too_many_classes", 401: "unauthorized",
    413: "too_large (bytes, or pixels read from the header)", 415: "unsupported_media_type",
    422: "invalid_request (malformed fields)", 503: "queue_full (with Retry-After), not_ready, shutting_down",
    504: "timeout"}.items()}


# -- the app -------------------------------------------------------------------------------------
class Service:
    """The models' state: loading, ready (a running batcher), failed or stopped."""

    def __init__(self, load: Callable[[], ServedModels], settings: ServeSettings, metrics: Metrics,
                 on_load_error: Callable[[BaseException], None] | None = None):
        self.load, self.settings, self.metrics, self.on_load_error = load, settings, metrics, on_load_error
        self.models: ServedModels | None = None
        self.batcher: Batcher | None = None
        self.error: BaseException | None = None
        self.stopping = False
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        self._loader = threading.Thread(target=self._load, name="ovdet-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        try:
            models = self.load()
            models.detector.vocabulary.memory_size = max(models.detector.vocabulary.memory_size, 256)
            batcher = Batcher(models.detector, models.classifier,
                              max_batch=self.settings.batch_for(models.detector.device),
                              wait_s=self.settings.batch_wait_ms / 1000, max_queue=self.settings.max_queue,
                              metrics=self.metrics)
            batcher.start()
            self.models, self.batcher = models, batcher
            self.metrics.ready.set(1)
            log.info("model loaded; serving")
        except BaseException as exc:  # noqa: BLE001 - reported by /readyz and the command
            self.error = exc
            log.error("cannot load the model: %s", first_line(exc))
            if self.on_load_error is not None:
                self.on_load_error(exc)

    def stop(self) -> None:
        """Stop taking jobs and finish the queued ones (in-flight requests have their answer)."""
        self.stopping = True
        self.metrics.ready.set(0)
        if self.batcher is not None:
            self.batcher.stop()

    def state(self) -> tuple[int, dict]:
        if self.stopping:
            return 503, {"error": "shutting_down", "message": "the server is shutting down"}
        if self.error is not None:
            return 503, {"error": "load_failed", "message": first_line(self.error)}
        if self.batcher is None:
            return 503, {"error": "not_ready", "message": "the model is loading"}
        if not self.batcher.alive:
            return 503, {"error": "not_ready", "message": "the model worker stopped"}
        return 200, {"status": "ready"}

    async def run(self, job: Job) -> Any:
        """Queue a job and wait for its result, within the settings' timeout."""
        status, body = self.state()
        if status != 200:
            raise ApiError(status, body["error"], body["message"])
        try:
            future = self.batcher.submit(job)
        except QueueFull as exc:
            raise ApiError(503, "queue_full", f"the server is busy ({exc}); retry later",
                           {"Retry-After": str(self.batcher.retry_after())}) from exc
        except RuntimeError as exc:
            raise ApiError(503, "shutting_down", "the server is shutting down") from exc
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.timeout)
        except asyncio.TimeoutError as exc:  # wait_for cancelled the job: the worker skips it
            raise ApiError(504, "timeout", f"no answer within {self.settings.timeout:g} s") from exc
        except (VocabularyError,) as exc:
            raise ApiError(400, "bad_classes", first_line(exc)) from exc
        except ImageReadError as exc:
            raise ApiError(400, "unreadable_image", first_line(exc)) from exc
        except OvdetError as exc:
            raise ApiError(400, "bad_request", first_line(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - a model failure answers this request only
            log.exception("request failed")
            raise ApiError(500, "internal_error", f"the model failed on this request: {first_line(exc)}") from exc


def create_app(load: Callable[[], ServedModels], settings: ServeSettings | None = None,
               on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The FastAPI app. `load` builds the models (called once, in a background thread, when
    the app starts); `on_load_error` is told when it fails (the command stops the server)."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    service = Service(load, settings, metrics, on_load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        await run_in_threadpool(service.stop)  # uvicorn gets here after in-flight requests finished

    app = FastAPI(title="ovdet", summary="Open-vocabulary object detection over HTTP", lifespan=lifespan,
                  version=_version())
    app.state.service = service
    app.state.metrics = metrics

    # -- errors as JSON with stable codes --------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.code, "message": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": "invalid_request", "message": _describe(exc.errors()),
                             "detail": _jsonable(exc.errors())}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, exc.status_code, headers=exc.headers)

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not reveal how much of a guessed key was right
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong API key (send Authorization: Bearer KEY)",
                           {"WWW-Authenticate": "Bearer"})

    # -- routes ---------------------------------------------------------------------------------
    @app.post("/v1/detect", dependencies=[Depends(authorize)], openapi_extra=_request_body(DetectFields, DetectJSON),
              responses=ERRORS, summary="Detect the named classes in one image")
    async def detect(request: Request) -> dict:
        """The answer is the object `ovdet detect --json` writes for one image: `{"image",
        "width", "height", "detections": [{"box": [x1, y1, x2, y2] (pixels), "score",
        "class_id", "class_name", "raw_score"}]}`."""
        fields, data, name = await _read(request, DetectFields, DetectJSON, settings)
        names, negatives = _vocabulary(fields.classes, fields.negatives, settings.max_classes)
        reduce = service.models.detector.decode_size if service.models is not None else None  # reduced_decode
        image = await run_in_threadpool(decode_image, data, settings, reduce)
        dets = await service.run(Job("detect", image, names, negatives, fields.threshold))
        return image_record(name, dets)

    @app.post("/v1/classify", dependencies=[Depends(authorize)],
              openapi_extra=_request_body(ClassifyFields, ClassifyJSON), responses=ERRORS,
              summary="Zero-shot classify one image with CLIP")
    async def classify(request: Request) -> dict:
        """The object `ovdet classify --json` writes for one image: `{"image", "probabilities":
        {class: p} (sum 1), "top": [{"class_name", "probability"}]}`."""
        if service.models is not None and service.models.classifier is None:
            raise ApiError(501, "classify_unavailable", "this server has no classifier: start it with "
                           "--classify-model (a CLIP preset or checkpoint), or serve a CLIP detector")
        fields, data, name = await _read(request, ClassifyFields, ClassifyJSON, settings)
        names, _ = _vocabulary(fields.classes, None, settings.max_classes)
        image = await run_in_threadpool(decode_image, data, settings)
        res = await service.run(Job("classify", image, names))
        return classification_record(name, res.as_dict(), fields.top_k)

    @app.get("/v1/model", dependencies=[Depends(authorize)], summary="What this server runs")
    async def model() -> dict:
        status, body = service.state()
        if service.models is None:
            raise ApiError(status, body["error"], body["message"])
        return _describe_model(service.models, settings, service.batcher)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and requests are served")
    async def readyz():
        status, body = service.state()
        return JSONResponse(body, status)

    @app.get("/metrics", dependencies=[Depends(authorize)], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # outermost first: metrics see every answer, the body limit included
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


# -- helpers -------------------------------------------------------------------------------------
async def _read(request: Request, fields_model: type[BaseModel], json_model: type[BaseModel],
                settings: ServeSettings) -> tuple[Any, bytes, str]:
    """(validated fields, image bytes, file name) from a multipart or JSON request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=16)
            except (StarletteHTTPException, ValueError) as exc:  # malformed multipart
                raise ApiError(422, "invalid_request", f"malformed multipart body: {getattr(exc, 'detail', exc)}") from exc
            try:
                upload = form.get("image")
                if not isinstance(upload, UploadFile):
                    raise ApiError(422, "invalid_request", "multipart field 'image' (a file) is required")
                data = await upload.read(settings.max_image_bytes + 1)  # one byte more tells "too large"
                values = {k: v for k, v in form.multi_items() if k != "image"}
                return fields_model.model_validate(values), data, upload.filename or "image"
            finally:
                await form.close()  # the upload's spooled temporary file
        if content_type == "application/json":
            try:
                payload = await request.json()
            except ValueError as exc:
                raise ApiError(422, "invalid_request", f"the body is not valid JSON: {exc}") from exc
            parsed = json_model.model_validate(payload)
            return parsed, _b64decode(parsed.image, settings), parsed.filename
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    except ClientDisconnect as exc:  # a truncated upload: nobody is left to answer
        raise ApiError(400, "client_disconnected", "the client closed the connection mid-upload") from exc
    raise ApiError(415, "unsupported_media_type", "send multipart/form-data (an 'image' file) or application/json")


def _b64decode(text: str, settings: ServeSettings) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) * 3 // 4 > settings.max_image_bytes + 2:  # before decoding
        raise too_large(f"image is over {settings.max_image_mb:g} MB")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "invalid_request", f"'image' is not valid base64: {exc}") from exc


def _names(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    return parse_classes(value) if isinstance(value, str) else list(value)


def _vocabulary(classes, negatives, max_classes: int) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """Validated (class names, negatives or None), or 400 bad_classes / too_many_classes."""
    try:
        names = validate_vocabulary(_names(classes))
        negs = tuple(n.strip() for n in _names(negatives) if n.strip())
        if negs:
            validate_vocabulary(list(names) + list(negs))  # a negative may not repeat a class
    except VocabularyError as exc:
        raise ApiError(400, "bad_classes", first_line(exc)) from exc
    if len(names) + len(negs) > max_classes:
        raise ApiError(400, "too_many_classes",
                       f"{len(names) + len(negs)} class names and negatives; this server accepts up to {max_classes}")
    return names, (negs if negatives is not None else None)


def _describe(errors) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _jsonable(errors) -> list[dict]:
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors]


def _describe_model(models: ServedModels, settings: ServeSettings, batcher: Batcher | None) -> dict:
    from ..runtime import resolve_precision

    det = models.detector
    cfg = det.config
    dtype = resolve_precision(cfg.precision, det.device)
    return {
        "preset": cfg.name or None,
        "weights": str(cfg.weights) if cfg.weights else None,
        "backend": cfg.backend,
        "device": str(det.device),
        "precision": {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(dtype), str(dtype)),
        "threshold": cfg.threshold,
        "batching": "image_pass" if det.splits_image_pass else "per_vocabulary",
        "classify_model": models.classifier_name,
        "limits": {"max_batch": batcher.max_batch if batcher else settings.batch_for(det.device),
                   "batch_wait_ms": settings.batch_wait_ms,
                   "max_image_mb": settings.max_image_mb, "max_pixels": settings.max_pixels,
                   "max_classes": settings.max_classes, "max_queue": settings.max_queue, "timeout": settings.timeout},
        "auth": settings.api_key is not None,
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ovdet")
    except PackageNotFoundError:
        return "0"


# -- ASGI middleware -----------------------------------------------------------------------------
class BodyLimit:
    """413 for request bodies over `max_bytes`: at once when Content-Length says so, else as
    soon as the streamed body passes the limit (chunked uploads declare no length)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            body = JSONResponse({"error": "too_large", "message": f"request body is {int(length):,} bytes; "
                                 f"this server accepts up to {self.max_bytes:,}"}, 413)
            return await body(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large(f"request body is over {self.max_bytes:,} bytes")
            return message

        return await self.app(scope, limited_receive, send)


class RequestMetrics:
    """Counts and times every HTTP answer by route template and status."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None)
            route = route if route in ROUTES else "other"  # unknown paths share one label: bounded cardinality
            self.metrics.observe_request(route, status, time.perf_counter() - start)
