"""What a SOURCE argument names, and opening it as an OpenCV-style capture.

SOURCE is one of: a video file, a webcam index ("0"), an rtsp(s):// or http(s):// URL, or a
folder / glob pattern of image frames (sorted by name). `parse_source` only reads the text and
the file system; `open_source` makes the capture and turns failures into one-line errors.

A capture is anything with the four `cv2.VideoCapture` methods the reader uses: `isOpened()`,
`read() -> (ok, frame)` with frames BGR uint8 (H, W, 3) as OpenCV returns them (RGB when the
capture says `frames_rgb = True`), `get(prop)` and `release()`. Tests inject their own through a capture factory `(Source) -> capture`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import ImageReadError, first_line
from ..io import IMAGE_EXTENSIONS, load_image
from .errors import SourceError, SourceOpenError

# FFmpeg prints decoder chatter ("moov atom not found", "error while decoding MB") straight to
# stderr; ovdet reports problems itself in one line. OpenCV reads this once, when its FFmpeg
# backend starts, so it must be set before the first capture; a user's own value wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
DEFAULT_TIMEOUT = 10.0  # seconds a network open or read may block before it counts as a failure

FILE, WEBCAM, STREAM, FRAMES = "file", "webcam", "stream", "frames"


@dataclass(frozen=True)
class Source:
    """A parsed SOURCE.

    Attributes:
        kind: "file", "webcam", "stream" (network URL) or "frames" (image files).
        target: the file path, webcam index or URL.
        frames: for "frames", the image paths in reading order.
    """

    kind: str
    target: str | int
    frames: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """How messages refer to the source; passwords in URLs are hidden."""
        if self.kind == WEBCAM:
            return f"webcam {self.target}"
        if self.kind == STREAM:
            return redact_url(str(self.target))
        if self.kind == FRAMES and len(self.frames) > 1:
            return f"{self.target} ({len(self.frames)} frames)"
        return str(self.target)

    def __str__(self) -> str:
        return self.name


CaptureFactory = Callable[[Source], Any]


def redact_url(url: str) -> str:
    """rtsp://user:secret@host/x -> rtsp://user:***@host/x (camera passwords stay out of logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def parse_source(source: str | int | os.PathLike) -> Source:
    """Classify SOURCE without opening it.

    Raises:
        SourceError: negative webcam index, unsupported URL scheme, URL without a host, missing
            file, or a folder / glob with no image frames.
    """
    if isinstance(source, bool):
        raise SourceError(f"invalid source {source!r}")
    if isinstance(source, int):
        text = str(source)
    else:
        text = os.fspath(source).strip()
    if not text:
        raise SourceError("empty source: give a video file, a webcam index, a stream URL or a frame folder")
    if re.fullmatch(r"[+-]?\d+", text) and not os.path.exists(text):
        index = int(text)
        if index < 0:
            raise SourceError(f"webcam index must be 0 or more, got {index}")
        return Source(WEBCAM, index)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in STREAM_SCHEMES:
            raise SourceError(
                f"unsupported URL scheme {scheme!r} in {redact_url(text)}: "
                f"ovdet reads {', '.join(s + '://' for s in STREAM_SCHEMES)} URLs, video files, "
                "webcam indices and frame folders"
            )
        if not urlsplit(text).hostname:
            raise SourceError(f"URL has no host: {redact_url(text)}")
        return Source(STREAM, text)
    path = Path(text).expanduser()
    if path.is_dir():
        frames = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not frames:
            raise SourceError(f"no image frames in folder {path} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        return Source(FRAMES, str(path), tuple(frames))
    if glob.has_magic(text):
        frames = sorted(
            m for m in glob.glob(os.path.expanduser(text), recursive=True)
            if os.path.isfile(m) and Path(m).suffix.lower() in IMAGE_EXTENSIONS
        )
        if not frames:
            raise SourceError(f"no image frames match {text}")
        return Source(FRAMES, text, tuple(frames))
    if not path.exists():
        raise SourceError(f"video not found: {path}")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return Source(FRAMES, str(path), (str(path),))
    return Source(FILE, str(path))


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines (e.g. "can't open camera by index") for the duration;
    the caller turns failures into one clear message instead."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:  # pragma: no cover - every current wheel has cv2.utils.logging
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


class FrameFolderCapture:
    """Image files read as a video, with the `cv2.VideoCapture` methods the reader uses.

    Frames come out RGB, as `load_image` decodes them (`frames_rgb`: the reader converts no
    further; OpenCV's captures give BGR); a file that cannot be decoded reads as `(False, None)`
    and the reader, knowing the frame count, skips it as a corrupt frame.
    """

    frames_rgb = True

    def __init__(self, paths: tuple[str, ...] | list[str]):
        self._paths = list(paths)
        self._pos = 0

    def isOpened(self) -> bool:  # noqa: N802 - cv2's spelling
        return bool(self._paths)

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._pos >= len(self._paths):
            return False, None
        path = self._paths[self._pos]
        self._pos += 1
        try:
            rgb = load_image(path)  # EXIF rotation, gray, 16-bit... handled in one place
        except ImageReadError:
            return False, None
        return True, rgb

    def get(self, prop: int) -> float:
        import cv2

        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(len(self._paths))
        if prop == cv2.CAP_PROP_POS_FRAMES:
            return float(self._pos)
        return 0.0  # fps and size are unknown until frames are read

    def release(self) -> None:
        self._pos = len(self._paths)


def open_capture(source: Source, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """The default capture factory: OpenCV's FFmpeg backend for files and URLs, the platform's
    camera backend for webcams, `FrameFolderCapture` for frames. May return a capture that is
    not opened; `open_source` checks."""
    import cv2

    if source.kind == FRAMES:
        return FrameFolderCapture(source.frames)
    with quiet_opencv():
        if source.kind == WEBCAM:
            return cv2.VideoCapture(int(source.target))
        if source.kind == STREAM:
            ms = int(timeout * 1000)
            # without these a dead camera can block a read for OpenCV's default 30 s
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            return cv2.VideoCapture(str(source.target), cv2.CAP_FFMPEG, params)
        return cv2.VideoCapture(str(source.target), cv2.CAP_FFMPEG)


def _open_failure(source: Source, reason: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> SourceOpenError:
    if source.kind == WEBCAM:
        text = f"cannot open webcam {source.target}: no camera with that index is available"
    elif source.kind == STREAM:
        text = f"cannot connect to {source.name}: no video stream answered within {timeout:g} s"
    elif source.kind == FRAMES:
        text = f"cannot read frames from {source.name}"
    else:
        text = (f"cannot open video {source.target}: not a video OpenCV can decode "
                "(corrupt or empty file, or an unsupported codec)")
    return SourceOpenError(f"{text} ({reason})" if reason else text)


def open_source(source: Source, factory: CaptureFactory | None = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Open `source` with `factory` (default `open_capture`) and return an opened capture.

    Raises:
        SourceOpenError: the capture did not open, or the factory raised.
    """
    try:
        cap = factory(source) if factory is not None else open_capture(source, timeout)
    except Exception as exc:  # cv2.error, OSError, a test's injected failure...
        raise _open_failure(source, first_line(exc), timeout) from exc
    if cap is None or not cap.isOpened():
        if cap is not None:
            release(cap)
        raise _open_failure(source, timeout=timeout)
    return cap


def release(cap: Any) -> None:
    """Release a capture, ignoring errors: it is being thrown away."""
    try:
        cap.release()
    except Exception:  # noqa: BLE001 - nothing useful to do with a failing release
        pass


def capture_property(cap: Any, prop: int) -> float:
    """`cap.get(prop)`, or 0.0 when the capture lacks it or fails (OpenCV's "unknown")."""
    try:
        value = float(cap.get(prop))
    except Exception:  # noqa: BLE001 - fakes and some backends raise for unsupported props
        return 0.0
    return value if np.isfinite(value) else 0.0
