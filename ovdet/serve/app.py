"""The FastAPI application of `ovdet serve`.

    app = create_app(lambda: ServedModels(Detector.from_pretrained("owlvit-b32")), ServeSettings())

Routes: POST /v1/detect, POST /v1/classify (multipart or JSON), GET /v1/model, GET /healthz,
GET /readyz, GET /metrics (Prometheus text), GET / (the web page), /static/*, /docs (OpenAPI).
Every answer other than 200 is JSON `{"error": stable_code, "message": text}`.

The models load in a background thread when the app starts, so /healthz answers at once and
/readyz says when the model is loaded; requests are then run by the `Batcher`'s worker thread.

Modules: `schemas` (request bodies), `parsing` (reading them: FastAPI dependencies),
`service` (the models' state and batcher), `middleware` (body limit, metrics); this one
assembles them.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..records import classification_record, image_record
from .batcher import Batcher, Job
from .limits import ApiError, ServeSettings, decode_image
from .metrics import Metrics
from .middleware import BodyLimit, RequestMetrics
from .parsing import ClassifyRequest, DetectRequest, classify_request, detect_request
from .schemas import ERRORS, ClassifyFields, ClassifyJSON, DetectFields, DetectJSON, request_body
from .service import ServedModels, Service

STATIC_DIR = Path(__file__).parent / "static"


def create_app(load: Callable[[], ServedModels], settings: ServeSettings | None = None,
               on_load_error: Callable[[BaseException], None] | None = None, db: str | None = None) -> FastAPI:
    """The FastAPI app. `load` builds the models (called once, in a background thread, when
    the app starts); `on_load_error` is told when it fails (the command stops the server).
    `db`: an `ovdet index` database to serve /v1/search from (`search_routes`)."""
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
    app.state.settings = settings  # the request dependencies read their limits here

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
    @app.post("/v1/detect", dependencies=[Depends(authorize)], openapi_extra=request_body(DetectFields, DetectJSON),
              responses=ERRORS, summary="Detect the named classes in one image")
    async def detect(req: DetectRequest = Depends(detect_request)) -> dict:
        """The answer is the object `ovdet detect --json` writes for one image: `{"image",
        "width", "height", "detections": [{"box": [x1, y1, x2, y2] (pixels), "score",
        "class_id", "class_name", "raw_score"}]}`; with `masks=true` each detection also has
        "mask" (COCO RLE), and "polygons" with `mask_format=polygon`."""
        detector = service.models.detector if service.models is not None else None
        if req.fields.masks and detector is not None and getattr(detector, "masker", None) is None:
            raise ApiError(400, "masks_unavailable", "this server has no masker: start it with --masks MODEL "
                           "(e.g. sam2-hiera-tiny)")
        reduce = detector.decode_size if detector is not None else None  # reduced_decode
        image = await run_in_threadpool(decode_image, req.data, settings, reduce)
        dets = await service.run(Job("detect", image, req.classes, None, req.fields.threshold, masks=req.fields.masks))
        return image_record(req.name, dets, req.fields.mask_format)

    @app.post("/v1/classify", dependencies=[Depends(authorize)],
              openapi_extra=request_body(ClassifyFields, ClassifyJSON), responses=ERRORS,
              summary="Zero-shot classify one image with CLIP")
    async def classify(req: ClassifyRequest = Depends(classify_request)) -> dict:
        """The object `ovdet classify --json` writes for one image: `{"image", "probabilities":
        {class: p} (sum 1), "top": [{"class_name", "probability"}]}`."""
        image = await run_in_threadpool(decode_image, req.data, settings)
        res = await service.run(Job("classify", image, req.names))
        return classification_record(req.name, res.as_dict(), req.fields.top_k)

    @app.get("/v1/model", dependencies=[Depends(authorize)], summary="What this server runs")
    async def model() -> dict:
        status, body = service.state()
        if service.models is None:
            raise ApiError(status, body["error"], body["message"])
        return {**_describe_model(service.models, settings, service.batcher), "search": app.state.search_db is not None}

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

    app.state.search_db = db
    if db is not None:
        from .search_routes import SearchService, add_search_routes

        add_search_routes(app, service, SearchService(db), authorize)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # outermost first: metrics see every answer, the body limit included
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


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
        "masks": cfg.masks or None,
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


__all__ = ["STATIC_DIR", "ServedModels", "Service", "create_app"]
