"""Reading images into RGB uint8 arrays, and expanding CLI image arguments into files.

Every image ovdet sees goes through `load_image`, so EXIF rotation, grayscale, alpha, palette
and 16-bit images are handled in one place.
"""

from __future__ import annotations

import glob
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, ImageTooLargeError, OvdetError

ORIENTATION_TAG = 0x0112  # EXIF
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# Images above max_pixels are refused before decoding (`read_image`), with one line that says how
# to raise the limit; the default takes a 20000 x 20000 image (1.2 GB as RGB).
DEFAULT_MAX_PIXELS = 500_000_000
# PIL's own ceiling (a warning above 89 Mpx, an error above 179 Mpx) would stand in front of
# max_pixels, and it is process-wide: ovdet turns it off once, at import, and checks sizes itself.
Image.MAX_IMAGE_PIXELS = None
# RGB images above this are decoded into memory ovdet owns and packed in place (`_decode_compact`):
# PIL holds RGB as 4 bytes a pixel and a numpy copy adds 3 (2.8 GB at the peak for 20000 x 20000).
LARGE_DECODE_PIXELS = 64_000_000


@dataclass(frozen=True)
class LoadedImage:
    """An image as decoded for a model.

    array: (h, w, 3) RGB uint8: the whole image by default; a JPEG read with a `decode_size`
        (the opt-in `reduced_decode`) may be decoded at 1/2, 1/4 or 1/8 scale (PIL's draft).
    size: (height, width) of the image itself (after EXIF rotation): detections are reported
        in these pixels.
    """

    array: np.ndarray
    size: tuple[int, int]

    @property
    def reduced(self) -> bool:
        return tuple(self.array.shape[:2]) != tuple(self.size)

# http(s) images: read into memory, never to disk; a cap so a wrong URL (a video, an endless
# stream) cannot fill memory, and a timeout per connect / read so a dead host cannot hang a run
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
DOWNLOAD_TIMEOUT = 20.0  # seconds
URL_SCHEMES = ("http://", "https://")


def is_url(value: object) -> bool:
    """True for an http(s) URL string (what `load_image` downloads)."""
    return isinstance(value, str) and value.lower().startswith(URL_SCHEMES)


def download_image_bytes(url: str, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
    """The body of an http(s) URL, at most `max_bytes` (default `MAX_DOWNLOAD_BYTES`), with
    `timeout` seconds (default `DOWNLOAD_TIMEOUT`) per connect and per read. Raises
    `ImageReadError` naming the URL on HTTP errors, timeouts and oversized bodies."""
    import urllib.error
    import urllib.request

    limit = MAX_DOWNLOAD_BYTES if max_bytes is None else max_bytes
    wait = DOWNLOAD_TIMEOUT if timeout is None else timeout
    request = urllib.request.Request(url, headers={"User-Agent": "ovdet"})
    too_big = f"image at {url} is larger than the {limit / 1e6:g} MB ovdet downloads"
    try:
        with urllib.request.urlopen(request, timeout=wait) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise ImageReadError(too_big)
            body = response.read(limit + 1)  # one byte more tells an oversized body without a length
    except urllib.error.HTTPError as exc:
        raise ImageReadError(f"cannot download image {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
            reason = f"no answer within {wait:g} s"
        raise ImageReadError(f"cannot download image {url}: {reason}") from exc
    if len(body) > limit:
        raise ImageReadError(too_big)
    return body


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


def _unidentified(exc: ImportError) -> BaseException:
    """Once ultralytics is imported, `PIL.Image.open` is its wrapper, which answers a file PIL
    cannot identify by importing a HEIF plugin (pi_heif) and retrying; without that package the
    user would see "No module named 'pi_heif'" for a broken JPEG. Report PIL's own error."""
    return exc.__context__ if isinstance(exc.__context__, UnidentifiedImageError) else exc


def check_pixels(height: int, width: int, max_pixels: int, name: str = "image") -> None:
    """Raise `ImageTooLargeError` (one line: how to raise the limit) above `max_pixels`."""
    if height * width > max_pixels:
        raise ImageTooLargeError(
            f"{name} is {width}x{height} = {height * width:,} pixels, above max_pixels ({max_pixels:,}); "
            f"to read it, raise the limit: --max-pixels {height * width} (config key max_pixels)",
            width=width, height=height, max_pixels=max_pixels,
        )


def read_image(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS,
               decode_size: Callable[[int, int], tuple[int, int] | None] | None = None) -> LoadedImage:
    """Load a path, http(s) URL, encoded bytes, PIL image, array or `LoadedImage` for a model.

    Args:
        image: as for `load_image`, or the bytes of an encoded image file (an upload).
        max_pixels: larger images raise `ImageTooLargeError` before they are decoded.
        decode_size: (height, width) -> the smallest (h, w) the model can use, or None for full
            size. JPEG files are then decoded reduced by 2, 4 or 8 in the DCT (PIL's draft),
            never below that size: less time and memory for photos much larger than the model's
            input, at the cost of a few 8-bit levels. Called after the file's header has been
            read. None (the default): every entry point decodes the same full pixels.
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
    if isinstance(image, (bytes, bytearray, memoryview)):
        return read_image_bytes(image, max_pixels, decode_size)
    if is_url(image):
        return read_image_bytes(download_image_bytes(image), max_pixels, decode_size, name=image)
    if hasattr(image, "__fspath__") or isinstance(image, str):
        return _read_file(Path(image), max_pixels, decode_size)
    raise ImageReadError(f"unsupported image type {type(image).__name__}: pass a path, PIL image or numpy array")


def read_model_input(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS,
                     decode_size: Callable[[int, int], tuple[int, int] | None] | None = None,
                     ) -> LoadedImage | np.ndarray:
    """`read_image`, in the form a detector's `detect_batch` takes it: the (H, W, 3) RGB uint8
    array itself when decoded in full, the `LoadedImage` when decoded reduced (its own size
    maps the boxes back). What label and eval feed their detectors, image by image."""
    loaded = read_image(image, max_pixels, decode_size)
    return loaded if loaded.reduced else loaded.array


def read_image_bytes(data: bytes | bytearray | memoryview, max_pixels: int = DEFAULT_MAX_PIXELS,
                     decode_size: Callable[[int, int], tuple[int, int] | None] | None = None,
                     name: str = "image") -> LoadedImage:
    """An encoded image in memory (an upload, a downloaded URL) -> `LoadedImage`, decoded as a
    file is (`decode_size` as for `read_image`). Raises `ImageTooLargeError` from the header,
    before decoding, above `max_pixels`; `ImageReadError` (`name` in the message) when the
    bytes are not a whole image."""
    import io

    return _decode(io.BytesIO(data), name, max_pixels, decode_size)


def decode_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> np.ndarray:
    """An encoded image in memory -> (H, W, 3) RGB uint8 at full size (`read_image_bytes`)."""
    return read_image_bytes(data, max_pixels, None, name).array


def load_image(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load a path, http(s) URL, PIL image or array as an (H, W, 3) RGB uint8 array, at full size.

    Arrays are taken as RGB (or gray / RGBA); 16-bit arrays keep their top byte, float arrays
    are taken as [0, 1]. Raises `ImageReadError` with the file name when the image is missing or
    cannot be decoded, `ImageTooLargeError` above `max_pixels`.
    """
    return read_image(image, max_pixels).array


def _read_file(path: Path, max_pixels: int, decode_size) -> LoadedImage:
    if not path.exists():
        raise ImageReadError(f"image not found: {path}", reason="file not found")
    if path.is_dir():
        raise ImageReadError(f"expected an image file, got a directory: {path}",
                             reason="a directory, not an image file")
    return _decode(path, str(path), max_pixels, decode_size)


def _decode(source: Any, name: str, max_pixels: int, decode_size) -> LoadedImage:
    """A file path or in-memory file (a downloaded URL) -> `LoadedImage`; `name` in errors."""
    path = name
    try:
        with Image.open(source) as img:  # reads the header only
            width, height = img.size
            check_pixels(height, width, max_pixels, str(path))
            # EXIF rotation from the header: JPEG only (PIL reads a PNG's EXIF by decoding it)
            rotated = img.format == "JPEG" and img.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)
            size = (width, height) if rotated else (height, width)
            if decode_size is not None and img.format == "JPEG":
                wanted = decode_size(height, width)
                if wanted is not None:
                    img.draft(None, (wanted[1], wanted[0]))  # keeps at least `wanted`
            array = _decode_compact(img) if img.width * img.height > LARGE_DECODE_PIXELS else None
            if array is None:
                img.load()  # PIL decodes in a Python loop over blocks: Ctrl-C is seen between them
                array = _pil_to_array(img)
            full = img.size == (width, height)  # not reduced by draft: the array is the image
            return LoadedImage(array, tuple(array.shape[:2]) if full else size)
    except OvdetError:  # ours (e.g. the model behind `decode_size` has no weights): not an image problem
        raise
    except Image.DecompressionBombError as exc:  # someone set PIL's own ceiling again
        raise ImageTooLargeError(f"{path}: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(_reason(exc, source))
        raise ImageReadError(f"cannot read image {path}: {reason}", reason=reason) from exc
    except ImportError as exc:
        reason = str(_reason(_unidentified(exc), source))
        raise ImageReadError(f"cannot read image {path}: {reason}", reason=reason) from exc


def _reason(exc: BaseException, source: Any) -> BaseException | str:
    """PIL names the file (a path, or an in-memory file by its repr `<_io.BytesIO object at
    0x...>`): the caller names it already, so say the reason alone."""
    if isinstance(exc, UnidentifiedImageError):
        return "cannot identify image file (not an image, or a format PIL cannot read)"
    return exc


def _decode_compact(img: Image.Image) -> np.ndarray | None:
    """A large RGB image decoded by PIL into memory ovdet owns, then packed in place: (H, W, 3)
    uint8 with a peak of 4 bytes a pixel instead of 7 (PIL's own 4-byte RGBX copy plus numpy's).

    PIL keeps RGB as RGBX and decodes into the image memory it finds attached; attaching a
    core that wraps an anonymous mmap lets the decoder write there. The rows are then packed
    to RGB towards the start of the map (each row's destination ends before the next row's
    source begins) and the freed tail is handed back to the OS. Returns None (nothing decoded)
    for other modes, or when this PIL did not decode into the attached memory (the image is
    then in `img`, decoded the usual way)."""
    if img.mode != "RGB":
        return None
    width, height = img.size
    memory = mmap.mmap(-1, height * width * 4)
    rgbx = np.frombuffer(memory, np.uint8).reshape(height, width, 4)
    target = Image.frombuffer("RGBX", (width, height), rgbx, "raw", "RGBX", 0, 1)
    img.im = target.im
    img.load()  # PIL decodes in a Python loop over blocks: Ctrl-C is seen between them
    if img.im is not target.im:
        return None
    flat = np.frombuffer(memory, np.uint8)
    step = max(1, 2**24 // (width * 4))
    for y in range(0, height, step):  # numpy copies through a temporary where a block overlaps
        y1 = min(height, y + step)
        np.copyto(flat[3 * width * y : 3 * width * y1].reshape(y1 - y, width, 3), rgbx[y:y1, :, :3])
    used = -(-3 * width * height // mmap.PAGESIZE) * mmap.PAGESIZE
    if used < len(memory):
        memory.madvise(mmap.MADV_DONTNEED, used, len(memory) - used)
    del target, rgbx
    return _orient(flat[: 3 * width * height].reshape(height, width, 3), img.getexif().get(ORIENTATION_TAG, 1))


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation applied to an (H, W, 3) array, as `ImageOps.exif_transpose` does."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
           8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](array)) if orientation in ops else array


def expand_image_args(args: Iterable[str]) -> Iterator[str]:
    """Expand CLI image arguments: files and http(s) URLs as given, directories to the image
    files anywhere below them (sorted by path; hidden folders skipped), glob patterns to their
    matches. A name that matches nothing is yielded as is, so the caller reports it as missing
    rather than silently dropping it.
    """
    for arg in args:
        if is_url(arg):  # before globbing: a query string's "?" is not a wildcard
            yield arg
        elif os.path.isdir(arg):
            yield from image_files_below(arg)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            files = [m for m in matches if os.path.isfile(m)]
            yield from files if files else [arg]
        else:
            yield arg


def image_files_below(folder: str | Path) -> list[str]:
    """Image files in `folder` and its subfolders (datasets keep images in train2017/ and the
    like), sorted by path; folders whose name starts with "." are skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found, key=lambda p: Path(p).parts)
