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


def decode_image(data: bytes, settings: ServeSettings, decode_size=None):
    """Uploaded bytes -> `ovdet.io.LoadedImage` (RGB uint8 (H, W, 3) and the image's own size),
    or an `ApiError`: 413 when the file or its pixel count (read from the header, before
    decoding) is over the limits, 400 when it is not an image or is truncated. Decoded as
    `ovdet detect` decodes a file (ovdet.io), so an upload and the same file on disk give the
    same pixels and the same errors; `decode_size` is the detector's (`Detector.decode_size`:
    None unless its `reduced_decode` is on), so that setting applies to uploads as to files."""
    from ..errors import ImageReadError, ImageTooLargeError
    from ..io import read_image_bytes

    if len(data) > settings.max_image_bytes:
        raise too_large(f"image is {len(data) / MB:.1f} MB; this server accepts up to {settings.max_image_mb:g} MB")
    if not data:
        raise ApiError(400, "unreadable_image", "the image is empty (0 bytes)")
    try:
        return read_image_bytes(data, settings.max_pixels, decode_size, name="the uploaded image")
    except ImageTooLargeError as exc:
        raise too_large(str(exc)) from exc
    except ImageReadError as exc:
        raise ApiError(400, "unreadable_image", str(exc)) from exc
