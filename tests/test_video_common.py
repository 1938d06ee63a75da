"""Helpers shared by the video tests (no tests here): videos made from real photographs, a
stub detector that really finds objects in pixels, and scriptable fake captures."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ovdet.structures import Detections

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

FRAME_W, FRAME_H = 192, 144  # even sizes: every codec takes them


def photo(name: str) -> np.ndarray:
    """An example photograph as RGB uint8 (H, W, 3)."""
    return cv2.imread(str(EXAMPLES / name))[..., ::-1].copy()


def moving_crop_frames(n: int, size=(FRAME_W, FRAME_H), step=(4, 2)) -> list[np.ndarray]:
    """n RGB frames: a window sliding over astronaut.jpg (512 x 512) by `step` px per frame."""
    img = photo("astronaut.jpg")
    w, h = size
    frames = []
    for i in range(n):
        x = (i * step[0]) % (img.shape[1] - w)
        y = (i * step[1]) % (img.shape[0] - h)
        frames.append(np.ascontiguousarray(img[y : y + h, x : x + w]))
    return frames


def cat_patch(size=(56, 40)) -> np.ndarray:
    """The cat's face from chelsea.jpg, resized to `size` (w, h): an object to paste and find."""
    img = photo("chelsea.jpg")  # 451 x 300
    return cv2.resize(img[40:200, 120:340], size, interpolation=cv2.INTER_AREA)


def pasted_objects_frames(n: int, objects, size=(FRAME_W, FRAME_H)) -> list[np.ndarray]:
    """Frames of a static astronaut.jpg background with patches moving on it.

    objects: [(patch RGB, (x0, y0), (vx, vy))]; the patch's top-left corner on frame i is
    (x0 + i*vx, y0 + i*vy).
    """
    w, h = size
    background = photo("astronaut.jpg")[200 : 200 + h, 150 : 150 + w]
    frames = []
    for i in range(n):
        frame = background.copy()
        for patch, (x0, y0), (vx, vy) in objects:
            x, y = int(round(x0 + i * vx)), int(round(y0 + i * vy))
            ph, pw = patch.shape[:2]
            frame[y : y + ph, x : x + pw] = patch
        frames.append(frame)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    """Encode RGB frames with OpenCV (fourcc from the suffix: .avi MJPG, else mp4v)."""
    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def read_video(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames decoded, fps, (width, height)) of a video, as a player would see it."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n = 0
    while cap.read()[0]:
        n += 1
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, fps, size


class TemplateDetector:
    """A stub detector that finds each class's template in the pixels (normalised
    cross-correlation), so boxes come from the frames, not from a script.

    Records the batch sizes it was called with; `flip` maps a call's frame counter to a class
    that wins instead (to make labels flicker).
    """

    def __init__(self, templates: list[np.ndarray], min_score: float = 0.6, flip=None):
        self.templates = templates
        self.min_score = min_score
        self.flip = flip
        self.batches: list[int] = []
        self.seen = 0

    def detect_batch(self, images, classes):
        classes = tuple(classes.split(",")) if isinstance(classes, str) else tuple(classes)
        self.batches.append(len(images))
        out = []
        for image in images:
            boxes, scores, ids = [], [], []
            for cid, tpl in enumerate(self.templates):
                res = cv2.matchTemplate(image, tpl, cv2.TM_CCOEFF_NORMED)
                _, best, _, (x, y) = cv2.minMaxLoc(res)
                if best >= self.min_score:
                    th, tw = tpl.shape[:2]
                    boxes.append([x, y, x + tw, y + th])
                    scores.append(min(1.0, best) * 0.9)
                    ids.append(cid)
            if self.flip is not None and ids:
                flipped = self.flip(self.seen)
                if flipped is not None:
                    ids = [flipped] * len(ids)
                    scores = [0.5] * len(ids)
            self.seen += 1
            out.append(Detections(xyxy=np.array(boxes, np.float32).reshape(-1, 4), scores=scores,
                                  class_ids=ids, class_names=classes, image_size=image.shape[:2]))
        return out


class FakeCapture:
    """A `cv2.VideoCapture` stand-in: serves `frames` (BGR) starting at `start`, then fails
    the way a dropping source does: `fail="none"` returns (False, None), `fail="raise"` raises
    like a broken socket, `fail="end"` just ends. `bad` lists positions whose read fails once
    (a corrupt frame inside a file). `interval` paces reads like a camera's frame period."""

    def __init__(self, frames, fail="none", count=0, fps=25.0, bad=(), opened=True, interval=0.0):
        self.frames = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
        self.fail = fail
        self.count = count
        self.fps = fps
        self.bad = set(bad)
        self.opened = opened
        self.interval = interval
        self.pos = 0
        self.reads = 0
        self.released = False

    def isOpened(self):  # noqa: N802
        return self.opened

    def read(self):
        self.reads += 1
        if self.interval:
            time.sleep(self.interval)
        if self.pos < len(self.frames):
            self.pos += 1
            if self.pos - 1 in self.bad:
                return False, None
            return True, self.frames[self.pos - 1]
        if self.fail == "raise":
            raise ConnectionResetError("connection reset by peer")
        return False, None

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: self.count,
                cv2.CAP_PROP_FRAME_WIDTH: self.frames[0].shape[1] if self.frames else 0,
                cv2.CAP_PROP_FRAME_HEIGHT: self.frames[0].shape[0] if self.frames else 0}.get(prop, 0.0)

    def release(self):
        self.released = True


class ScriptedFactory:
    """Capture factory returning the next capture from a list on each open (None = the open
    fails); records how many opens were made."""

    def __init__(self, captures):
        self.captures = list(captures)
        self.opens = 0

    def __call__(self, source):
        self.opens += 1
        if not self.captures:
            return FakeCapture([], opened=False)
        cap = self.captures.pop(0)
        return FakeCapture([], opened=False) if cap is None else cap


class FlakyVideoServer(http.server.ThreadingHTTPServer):
    """Loopback HTTP server for one video file. Request 1 is cut off halfway (a dropped
    connection); later requests get `later`: "full" or "refuse" (HTTP 503)."""

    def __init__(self, payload: bytes, later: str):
        self.payload, self.later, self.requests = payload, later, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests += 1
                if server.requests > 1 and server.later == "refuse":
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/x-msvideo")
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                body = server.payload if server.requests > 1 else server.payload[: len(server.payload) // 2]
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/clip.avi"

    def close(self):
        self.shutdown()
        self.server_close()


def cli(argv) -> int:
    """Run `ovdet video ARGV` in this process, as the `ovdet` entry point does."""
    from ovdet.cli import main

    return main(["video", *(str(a) for a in argv)])

