"""Reading images into RGB uint8 arrays, and expanding CLI image arguments into files.

Every image ovdet sees goes through `load_image`, so EXIF rotation, grayscale, alpha, palette
and 16-bit images are handled in one place.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, ImageTooLargeError

ORIENTATION_TAG = 0x0112  # EXIF
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# Images above max_pixels are refused before decoding (`read_image`), with one line that says how
# to raise the limit; the default takes a 20000 x 20000 image (1.2 GB as RGB).
DEFAULT_MAX_PIXELS = 500_000_000
# PIL's own ceiling (a warning above 89 Mpx, an error above 179 Mpx) would stand in front of
# max_pixels, and it is process-wide: ovdet turns it off once, at import, and checks sizes itself.
Image.MAX_IMAGE_PIXELS = None
# Decoded by OpenCV above this: PIL holds RGB as 4 bytes a pixel and numpy then copies it (7
# bytes a pixel at the peak); OpenCV decodes into the 3-byte array directly.
LARGE_DECODE_PIXELS = 64_000_000


@dataclass(frozen=True)
class LoadedImage:
    """An image as decoded for a model.

    array: (h, w, 3) RGB uint8; a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (PIL's draft)
        when the model needs fewer pixels.
    size: (height, width) of the image itself (after EXIF rotation): detections are reported
        in these pixels.
    """

    array: np.ndarray
    size: tuple[int, int]

    @property
    def reduced(self) -> bool:
        return tuple(self.array.shape[:2]) != tuple(self.size)


def _to_uint8_rgb(arr: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1|2|3|4) of any integer or float dtype -> (H, W, 3) uint8."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"expected an image array of shape (H, W) or (H, W, 1-4), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"image has no pixels (shape {arr.shape})")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)  # 16-bit: keep the top byte
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        # floats are taken as [0, 1] (the usual convention); NaN becomes black
        arr = (np.nan_to_num(np.clip(arr, 0.0, 1.0)) * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        hi = int(arr.max()) if arr.size else 0
        scale = 255.0 / hi if hi > 255 else 1.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
    else:
        raise ImageReadError(f"unsupported image dtype {arr.dtype}")
    channels = arr.shape[2]
    if channels in (1, 2):  # gray (+ alpha): drop alpha, replicate gray
        arr = np.repeat(arr[..., :1], 3, axis=2)
    elif channels == 4:  # RGBA: drop alpha (the colour under it is what the camera saw)
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)  # phones store rotation in EXIF
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _to_uint8_rgb(np.asarray(img).astype(np.uint16))
    if img.mode in ("I", "F"):
        arr = np.asarray(img)
        if img.mode == "I" and arr.max(initial=0) <= 65535:  # 16-bit PNGs open as mode "I"
            return _to_uint8_rgb(arr.astype(np.uint16))
        return _to_uint8_rgb(arr)
    if img.mode != "RGB":
        img = img.convert("RGB")  # palette, CMYK, LA, RGBA, 1-bit ...
    return np.array(img)  # a writable copy: torch refuses to wrap read-only buffers


def check_pixels(height: int, width: int, max_pixels: int, name: str = "image") -> None:
    """Raise `ImageTooLargeError` (one line: how to raise the limit) above `max_pixels`."""
    if height * width > max_pixels:
        raise ImageTooLargeError(
            f"{name} is {width}x{height} = {height * width:,} pixels, above max_pixels ({max_pixels:,}); "
            f"to read it, raise the limit: --max-pixels {height * width} (config key max_pixels)"
        )


def read_image(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS,
               decode_size: Callable[[int, int], tuple[int, int] | None] | None = None) -> LoadedImage:
    """Load a path, PIL image, array or `LoadedImage` for a model.

    Args:
        image: as for `load_image`.
        max_pixels: larger images raise `ImageTooLargeError` before they are decoded.
        decode_size: (height, width) -> the smallest (h, w) the model can use, or None for full
            size. JPEG files are then decoded reduced by 2, 4 or 8 in the DCT (PIL's draft),
            never below that size: less time and memory for photos much larger than the model's
            input. Called after the file's header has been read.
    Raises `ImageReadError` with the file name when the image is missing or cannot be decoded.
    """
    if isinstance(image, LoadedImage):
        check_pixels(*image.size, max_pixels)
        return image
    if isinstance(image, np.ndarray):
        if image.ndim >= 2:
            check_pixels(*image.shape[:2], max_pixels, "array")
        array = _to_uint8_rgb(image)
        return LoadedImage(array, array.shape[:2])
    if isinstance(image, Image.Image):
        check_pixels(image.height, image.width, max_pixels)
        array = _pil_to_array(image)
        return LoadedImage(array, array.shape[:2])
    if hasattr(image, "__fspath__") or isinstance(image, str):
        return _read_file(Path(image), max_pixels, decode_size)
    raise ImageReadError(f"unsupported image type {type(image).__name__}: pass a path, PIL image or numpy array")


def load_image(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load a path, PIL image or array as an (H, W, 3) RGB uint8 array, at full size.

    Arrays are taken as RGB (or gray / RGBA); 16-bit arrays keep their top byte, float arrays
    are taken as [0, 1]. Raises `ImageReadError` with the file name when the image is missing or
    cannot be decoded, `ImageTooLargeError` above `max_pixels`.
    """
    return read_image(image, max_pixels).array


def _read_file(path: Path, max_pixels: int, decode_size) -> LoadedImage:
    if not path.exists():
        raise ImageReadError(f"image not found: {path}")
    if path.is_dir():
        raise ImageReadError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
            check_pixels(height, width, max_pixels, str(path))
            rotated = img.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)
            size = (width, height) if rotated else (height, width)
            if decode_size is not None and img.format == "JPEG":
                wanted = decode_size(height, width)
                if wanted is not None:
                    img.draft(None, (wanted[1], wanted[0]))  # keeps at least `wanted`
            if img.size == (width, height) and width * height > LARGE_DECODE_PIXELS:
                array = _decode_opencv(path)
                if array is not None and array.shape[:2] == size:
                    return LoadedImage(array, size)
            img.load()  # PIL decodes in a Python loop over blocks: Ctrl-C is seen between them
            return LoadedImage(_pil_to_array(img), size)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def _decode_opencv(path: Path) -> np.ndarray | None:
    """(H, W, 3) RGB uint8 decoded by OpenCV (EXIF rotation applied, 16-bit scaled to 8,
    alpha dropped), or None when OpenCV cannot read the file.

    OpenCV decodes in one call that releases the GIL but does not return before it is done, so
    it runs in a daemon thread and this thread waits in short steps: Ctrl-C still ends the run
    at once (the worker dies with the process)."""
    import cv2

    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(array=cv2.imread(str(path), cv2.IMREAD_COLOR)),
                              name="ovdet-decode", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    array = result.get("array")
    if array is None:
        return None
    step = max(1, 2**24 // (array.shape[1] * 3))
    for y in range(0, array.shape[0], step):  # BGR -> RGB in place, in steps (Ctrl-C between them)
        cv2.cvtColor(array[y : y + step], cv2.COLOR_BGR2RGB, dst=array[y : y + step])
    return array


def expand_image_args(args: Iterable[str]) -> Iterator[str]:
    """Expand CLI image arguments: files as given, directories to their image files (sorted),
    glob patterns to their matches. A name that matches nothing is yielded as is, so the caller
    reports it as missing rather than silently dropping it.
    """
    for arg in args:
        if os.path.isdir(arg):
            found = sorted(p for p in Path(arg).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            yield from (str(p) for p in found)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            files = [m for m in matches if os.path.isfile(m)]
            yield from files if files else [arg]
        else:
            yield arg


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Write a result file through a temporary file in the same folder, moved into place with
    `os.replace` only when the `with` block succeeds: an interrupted run never leaves a
    truncated file behind. Yields the temporary path (its suffix ends in `.tmp`, so pass the
    format explicitly to writers that guess it from the name)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a plain open with "x" gets the usual umask permissions (mkstemp's are 0600)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, payload: Any, indent: int | None = None) -> Path:
    """JSON written through `atomic_output` (flushed to disk before it replaces `path`)."""
    with atomic_output(path) as tmp:
        with open(tmp, "x", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=indent)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)
