"""`ovdet serve --db DIR`: the search index over HTTP.

    POST /v1/search          {"query": "forklift", "top": 20, "threshold": 0.1} -> {"query", "hits": [...]}
    GET  /v1/search/thumb    ?image_id=..&box=x1,y1,x2,y2&label=.. -> a PNG tile of the hit (box drawn)

Each hit is `ovdet search --json`'s object plus `image_id` (for the thumbnail route, which
serves only images the index holds). Searches run in a worker thread, one at a time.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..errors import OvdetError, first_line
from .limits import ApiError

THUMB_PX = 256


class SearchFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(description='class name(s): "forklift" or "forklift,pallet"')
    top: int = Field(20, ge=1, le=1000, description="hits to return")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="score cut (default: the model's)")
    negatives: str | None = Field(None, description="comma-separated prompts that must not match")


class SearchService:
    """The index a server searches, with the served detector (same model: checked at start)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.lock = threading.Lock()  # one search at a time: the vocabulary cache is not shared-safe

    def search(self, detector, fields: SearchFields) -> dict[str, Any]:
        from ..index.search import search_index
        from ..index.store import Store, image_id

        with self.lock:
            store = Store.open(self.uri)
            hits = search_index(store, detector, fields.query, top=fields.top, threshold=fields.threshold,
                                negatives=fields.negatives)
        return {"query": fields.query, "hits": [{**h.as_dict(), "image_id": str(image_id(h.path))} for h in hits]}

    def thumbnail(self, key: int, box: tuple[float, float, float, float], label: str) -> bytes:
        import cv2

        from ..index.search import Hit
        from ..index.sheet import hit_tile
        from ..index.store import Store
        from ..io import load_image

        info = Store.open(self.uri).paths([key]).get(key)
        if info is None:
            raise ApiError(404, "not_found", "no such image in the index")
        name, _, score = label.rpartition(" ")
        try:
            hit = Hit(info["path"], box, float(score or 0), name or label, 0.0, (info["height"], info["width"]))
        except ValueError:
            hit = Hit(info["path"], box, 0.0, label, 0.0, (info["height"], info["width"]))
        tile = hit_tile(hit, load_image(info["path"]), THUMB_PX)
        ok, png = cv2.imencode(".png", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
        return png.tobytes()


def add_search_routes(app: FastAPI, service, search: SearchService, authorize) -> None:
    """Register /v1/search and its thumbnails on `app` (`service`: the server's `Service`)."""

    def detector():
        status, body = service.state()
        if status != 200:
            raise ApiError(status, body["error"], body["message"])
        return service.models.detector

    @app.post("/v1/search", dependencies=[Depends(authorize)], summary="Search the index (ovdet serve --db)")
    async def search_route(fields: SearchFields) -> dict:
        """Hits best first: `{"image", "box", "score", "class_name", "raw_score", "image_size", "image_id"}`."""
        try:
            return await run_in_threadpool(search.search, detector(), fields)
        except ApiError:
            raise
        except OvdetError as exc:
            raise ApiError(400, "bad_query", first_line(exc)) from exc

    @app.get("/v1/search/thumb", dependencies=[Depends(authorize)], summary="A hit's thumbnail (PNG)")
    async def thumb(image_id: str, box: str, label: str = "") -> Response:
        try:
            key = int(image_id)
            values = tuple(float(v) for v in box.split(","))
            if len(values) != 4:
                raise ValueError
        except ValueError as exc:
            raise ApiError(400, "bad_request", "image_id must be an integer and box x1,y1,x2,y2") from exc
        try:
            png = await run_in_threadpool(search.thumbnail, key, values, label)
        except ApiError:
            raise
        except OvdetError as exc:
            raise ApiError(404, "not_found", first_line(exc)) from exc
        return Response(png, media_type="image/png")
