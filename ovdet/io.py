"""Reading images into RGB uint8 arrays, and expanding CLI image arguments into files.

Every image ovdet sees goes through `load_image`, so EXIF rotation, grayscale, alpha, palette
and 16-bit images are handled in one place.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# PIL refuses images above ~179 Mpx as decompression bombs; ovdet resizes every image to the
# model's input anyway, so allow large photos (e.g. 100 Mpx panoramas) but keep a ceiling.
MAX_IMAGE_PIXELS = 400_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # once, at import: the setting is process-wide


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


def load_image(image: Any) -> np.ndarray:
    """Load a path, PIL image or array as an (H, W, 3) RGB uint8 array.

    Arrays are taken as RGB (or gray / RGBA); 16-bit arrays keep their top byte, float arrays
    are taken as [0, 1]. Raises `ImageReadError` with the file name when the image is missing or
    cannot be decoded.
    """
    if isinstance(image, np.ndarray):
        return _to_uint8_rgb(image)
    if isinstance(image, Image.Image):
        return _pil_to_array(image)
    if hasattr(image, "__fspath__") or isinstance(image, str):
        path = Path(image)
        if not path.exists():
            raise ImageReadError(f"image not found: {path}")
        if path.is_dir():
            raise ImageReadError(f"expected an image file, got a directory: {path}")
        try:
            with Image.open(path) as img:
                img.load()
                return _pil_to_array(img)
        except Image.DecompressionBombError as exc:
            raise ImageReadError(f"image too large ({exc}); ovdet reads up to {MAX_IMAGE_PIXELS:,} pixels: {path}") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError) as exc:
            # ImportError: once ultralytics is imported, its patched `Image.open` answers an
            # unidentified file by importing pi_heif (for HEIC photos), which may be missing
            raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    raise ImageReadError(f"unsupported image type {type(image).__name__}: pass a path, PIL image or numpy array")


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
