"""The request bodies of `ovdet serve` (pydantic models) and their OpenAPI descriptions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Names = list[str] | str  # a JSON list, or one comma-separated string (what multipart sends)


class DetectFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    classes: Names = Field(description='class names: ["cat", "dog"] or "cat,dog"')
    negatives: Names | None = Field(None, description="prompts that must not be reported (default: the model's)")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="score cut (default: the model's)")
    masks: bool = Field(False, description='a "mask" (COCO RLE) per detection; the server needs --masks MODEL')
    mask_format: Literal["rle", "polygon"] = Field("rle", description='with masks: "polygon" adds "polygons"')


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


def request_body(fields: type[BaseModel], json_model: type[BaseModel]) -> dict:
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
    400: "unreadable_image, bad_classes, too_many_classes, masks_unavailable", 401: "unauthorized",
    413: "too_large (bytes, or pixels read from the header)", 415: "unsupported_media_type",
    422: "invalid_request (malformed fields)", 503: "queue_full (with Retry-After), not_ready, shutting_down",
    504: "timeout"}.items()}
