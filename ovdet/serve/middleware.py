"""ASGI middleware of `ovdet serve`: the request-body limit and the per-route metrics."""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse

from .limits import ServeSettings, body_too_large
from .metrics import Metrics

ROUTES = ("/v1/detect", "/v1/classify", "/v1/model", "/healthz", "/readyz", "/metrics", "/", "/static", "/docs",
          "/openapi.json")


class BodyLimit:
    """413 for request bodies over `settings.max_body_bytes`: at once when Content-Length says so, else as
    soon as the streamed body passes the limit (chunked uploads declare no length)."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.settings, self.max_bytes = app, settings, settings.max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            error = body_too_large(self.settings, int(length))
            body = JSONResponse({"error": error.code, "message": error.message}, 413)
            return await body(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise body_too_large(self.settings)
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
