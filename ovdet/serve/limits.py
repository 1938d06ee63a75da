"""What `ovdet serve` accepts: its settings, the API's error type, and decoding an uploaded image
within the byte and pixel limits.

The pixel limit is decided from the image header: PIL's `Image.open` reads only the header, so
a decompression bomb (a small file that claims a huge canvas) is refused before a single pixel
is decoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits and batching (the `ovdet serve` flags).

    max_batch: images per image-tower pass (None: 8 on a GPU, 1 on a CPU, where one image already
    keeps the cores busy and batching only adds waiting; see tools/bench_serve.py); batch_wait_ms: how long the first request of a batch
    waits for others; max_image_mb: bytes of one uploaded image; max_pixels: width x height of
    one image; max_classes: class names + negatives of one request; max_queue: requests waiting
    for the model before new ones get 503; timeout: seconds a request may wait for its answer
    (504 after); api_key: required as `Authorization: Bearer KEY` on /v1/* and /metrics when set.
    """

    max_batch: int | None = None
    batch_wait_ms: float = 10.0
    max_image_mb: float = 20.0
    max_pixels: int = 50_000_000
    max_classes: int = 1300  # LVIS (1,203 names) plus some negatives
    max_queue: int = 64
    timeout: float = 60.0
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_pixels", "max_classes", "max_queue"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_image_mb", "timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")

    def batch_for(self, device) -> int:
        """The images per pass on `device` (a torch.device): max_batch, or its default."""
        if self.max_batch is not None:
            return self.max_batch
        return 8 if getattr(device, "type", str(device)) == "cuda" else 1

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * MB)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: the image base64-encoded (4/3 of its bytes) plus 64 KiB for
        the other fields (an LVIS vocabulary is about 15 KiB)."""
        return math.ceil(self.max_image_bytes * 4 / 3) + 64 * 1024


class ApiError(Exception):
    """An answer other than 200: HTTP status, a stable machine-readable `code`, a message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


def megabytes(n: float) -> str:
    return f"{n / MB:.3g} MB"  # 0.527 MB, 11.4 MB, 25 MB


def image_too_large(settings: ServeSettings, size: int | None = None) -> ApiError:
    """413 for an image over --max-image-mb: its real size, or "over N MB" when it was cut off
    unread (`size` None), and the limit as the operator gave it (10 -> "10 MB")."""
    what = f"is {megabytes(size)}" if size is not None else f"is over {settings.max_image_mb:g} MB"
    return too_large(f"the image {what}; this server accepts images up to {settings.max_image_mb:g} MB")


def body_too_large(settings: ServeSettings, size: int | None = None) -> ApiError:
    """413 for a request body over `max_body_bytes` (the image limit plus base64 and the other
    fields): the body's size (or "over" the body limit when it streamed past it undeclared) and
    the image limit, which is what the client can act on."""
    what = f"is {megabytes(size)}" if size is not None else f"is over {megabytes(settings.max_body_bytes)}"
    return too_large(f"the request body {what}; this server accepts images up to {settings.max_image_mb:g} MB "
                     f"(a request body up to {megabytes(settings.max_body_bytes)}, base64 included)")


def too_many_pixels(exc) -> ApiError:
    """413 for an image over --max-pixels, worded for the client (downscale it), not with the
    operator's flag that `ovdet.io` suggests."""
    if exc.max_pixels is None:  # PIL's own ceiling: no sizes to quote
        return too_large(f"the image has too many pixels: {exc.reason}")
    pixels = exc.width * exc.height
    scale = math.sqrt(exc.max_pixels / pixels)
    fits = f"{math.floor(exc.width * scale)}x{math.floor(exc.height * scale)}"  # floors keep it under
    return too_large(f"the image is {exc.width}x{exc.height} = {pixels:,} pixels; this server accepts up to "
                     f"{exc.max_pixels:,}: downscale it to at most that many (e.g. {fits}) and send it again")


def decode_image(data: bytes, settings: ServeSettings, decode_size=None):
    """Uploaded bytes -> `ovdet.io.LoadedImage` (RGB uint8 (H, W, 3) and the image's own size),
    or an `ApiError`: 413 when the file or its pixel count (read from the header, before
    decoding) is over the limits, 400 when it is not an image or is truncated. Decoded as
    `ovdet detect` decodes a file (ovdet.io), so an upload and the same file on disk give the
    same pixels and the same errors; `decode_size` is the detector's (`Detector.decode_size`:
    None unless its `reduced_decode` is on), so that setting applies to uploads as to files."""
    from ..errors import ImageReadError, ImageTooLargeError
    from ..io import read_image_bytes

    if len(data) > settings.max_image_bytes:  # read up to one byte past the limit: its size is unknown
        raise image_too_large(settings)
    if not data:
        raise ApiError(400, "unreadable_image", "the image is empty (0 bytes)")
    try:
        return read_image_bytes(data, settings.max_pixels, decode_size, name="upload")
    except ImageTooLargeError as exc:
        raise too_many_pixels(exc) from exc
    except ImageReadError as exc:
        raise ApiError(400, "unreadable_image", f"cannot read the uploaded image: {exc.reason}") from exc
