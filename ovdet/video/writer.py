"""The annotated video of a video run (its per-frame JSONL is written by `ovdet.files.JsonlWriter`).

Written frame by frame as results arrive, so whatever was processed before a stop or a crash
is on disk; the video is playable once `close()` has written the container's index (an .mp4
needs that; an .avi mostly plays without).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoWriteError

# mp4v (MPEG-4 Part 2) and MJPG are encoded by OpenCV's bundled FFmpeg in every opencv-python
# wheel; H.264 ("avc1") usually is not (it needs a system encoder), so it is not the default.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def check_video_path(path: str | Path) -> Path:
    """Validate an output video path before any work starts; creates its folder.

    Raises:
        VideoWriteError: unknown container suffix, or the folder cannot be created.
    """
    path = Path(path)
    if path.suffix.lower() not in VIDEO_CODECS:
        raise VideoWriteError(
            f"cannot write video {path}: use one of {', '.join(sorted(VIDEO_CODECS))} as the suffix"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VideoWriteError(f"cannot create folder for {path}: {exc.strerror or exc}") from exc
    return path


class VideoFileWriter:
    """Write RGB uint8 (H, W, 3) frames to a video file at a fixed size and frame rate.

    Args:
        path: .mp4 / .m4v / .mov / .mkv (mp4v codec) or .avi (MJPG).
        fps: frames per second written into the container (use the input's to keep timing).
        size: (width, height) of every frame; frames of another size (a camera that came back
            at another resolution) are resized to it, because a container has one size.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        import cv2

        self.path = check_video_path(path)
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1]))
        self.frames = 0
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self.size)
        if not self._writer.isOpened():
            raise VideoWriteError(
                f"cannot write video {self.path}: OpenCV could not open an encoder "
                f"for {self.size[0]}x{self.size[1]} at {self.fps:g} fps"
            )

    def write(self, frame_rgb: np.ndarray) -> None:
        """Append an RGB uint8 (H, W, 3) frame."""
        import cv2

        self.write_bgr(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))

    def write_bgr(self, frame_bgr: np.ndarray) -> None:
        """Append a BGR uint8 (H, W, 3) frame (OpenCV's order: no conversion needed)."""
        import cv2

        if self._writer is None:
            raise VideoWriteError(f"video {self.path} is already closed")
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
            # OpenCV would drop a frame of another size with only a log line
            frame_bgr = cv2.resize(frame_bgr, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame_bgr)
        self.frames += 1

    def close(self) -> None:
        """Finish the container (writes the index an .mp4 needs to play). Idempotent."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> "VideoFileWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
