"""Reading a request of `ovdet serve` into what a job needs, as FastAPI dependencies: the
fields (multipart form or JSON), the image bytes and the validated vocabulary. Errors are
`ApiError`s with the API's stable codes (415, 422, 400, 413).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import VocabularyError, first_line
from ..text import parse_classes, validate_vocabulary
from ..vocabulary import ResolvedClasses, resolve_classes
from .limits import ApiError, ServeSettings, image_too_large
from .schemas import ClassifyFields, ClassifyJSON, DetectFields, DetectJSON


@dataclass(frozen=True)
class DetectRequest:
    """A /v1/detect request: its fields, the image file's bytes and name, and the classes and
    negatives validated once (negatives None: the model's)."""

    fields: DetectFields
    data: bytes
    name: str
    classes: ResolvedClasses


@dataclass(frozen=True)
class ClassifyRequest:
    fields: ClassifyFields
    data: bytes
    name: str
    names: tuple[str, ...]


async def detect_request(request: Request) -> DetectRequest:
    settings: ServeSettings = request.app.state.settings
    fields, data, name = await read_body(request, DetectFields, DetectJSON, settings)
    return DetectRequest(fields, data, name, detect_classes(fields.classes, fields.negatives, settings.max_classes))


async def classify_request(request: Request) -> ClassifyRequest:
    service, settings = request.app.state.service, request.app.state.settings
    if service.models is not None and service.models.classifier is None:  # before reading the body
        raise ApiError(501, "classify_unavailable", "this server has no classifier: start it with "
                       "--classify-model (a CLIP preset or checkpoint), or serve a CLIP detector")
    fields, data, name = await read_body(request, ClassifyFields, ClassifyJSON, settings)
    try:
        names = validate_vocabulary(names_of(fields.classes))
    except VocabularyError as exc:
        raise ApiError(400, "bad_classes", first_line(exc)) from exc
    check_count(len(names), settings.max_classes)
    return ClassifyRequest(fields, data, name, names)


async def read_body(request: Request, fields_model: type[BaseModel], json_model: type[BaseModel],
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
                if (upload.size or 0) > settings.max_image_bytes:  # spooled whole: its real size is known
                    raise image_too_large(settings, upload.size)
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
            return parsed, b64decode_image(parsed.image, settings), parsed.filename
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    except ClientDisconnect as exc:  # a truncated upload: nobody is left to answer
        raise ApiError(400, "client_disconnected", "the client closed the connection mid-upload") from exc
    raise ApiError(415, "unsupported_media_type", "send multipart/form-data (an 'image' file) or application/json")


def b64decode_image(text: str, settings: ServeSettings) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) * 3 // 4 > settings.max_image_bytes + 2:  # before decoding
        raise image_too_large(settings, len(text) * 3 // 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "invalid_request", f"'image' is not valid base64: {exc}") from exc


def names_of(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    return parse_classes(value) if isinstance(value, str) else list(value)


def detect_classes(classes, negatives, max_classes: int) -> ResolvedClasses:
    """The validated classes and negatives (None: the model's), or 400 bad_classes /
    too_many_classes. The detector takes the result as it is: no second validation."""
    try:
        resolved = resolve_classes(names_of(classes), None if negatives is None else names_of(negatives))
    except VocabularyError as exc:
        raise ApiError(400, "bad_classes", first_line(exc)) from exc
    check_count(len(resolved.names) + len(resolved.negatives or ()), max_classes)
    return resolved


def check_count(count: int, max_classes: int) -> None:
    if count > max_classes:
        raise ApiError(400, "too_many_classes",
                       f"{count} class names and negatives; this server accepts up to {max_classes}")
