"""Reading frames in a background thread into a bounded queue.

Decoding runs beside detection instead of before it. What happens when the consumer is slower
than the source depends on the source:

- files, frame folders and network videos of known length: the reader waits (no frame lost);
- live sources (webcams, network streams of unknown length): the oldest queued frame is
  dropped to make room, so results stay current; drops are counted.

A live source that stops delivering is reopened with exponential backoff, up to a configurable
number of attempts; then `StreamLostError`. A network video of known length that breaks off is
reopened and the frames already delivered are skipped, so none is repeated. Frames that fail to
decode in the middle of a file are skipped and counted.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import ConfigError
from .errors import SourceOpenError, StreamLostError
from .frames import DEFAULT_FPS, RawFrame, ReaderStats, ReconnectPolicy, SourceInfo, to_rgb
from .sources import (
    DEFAULT_TIMEOUT,
    STREAM,
    WEBCAM,
    CaptureFactory,
    Source,
    capture_property,
    open_source,
    parse_source,
    release,
)

MAX_BAD_READS = 25  # consecutive failed reads inside a file before it is taken as ended


class FrameReader:
    """Frames of one source, read by a background thread into a bounded queue.

        reader = FrameReader("clip.mp4")          # opens now: errors surface here
        for frame in reader:                       # the thread starts on first use
            ...                                    # frame.image: (H, W, 3) RGB uint8
        reader.close()

    Args:
        source: SOURCE text (see `parse_source`) or a parsed `Source`.
        capture_factory: `(Source) -> capture`; default OpenCV (see `sources.open_capture`).
        queue_size: frames buffered between reading and the consumer.
        reconnect: how dropped sources are reopened.
        max_frames: hand out at most this many frames (from a file, read no more).
        fps: frame rate to use instead of what the source reports (frame folders report none).
        timeout: seconds a network open or read may block.
        clock: monotonic seconds; live timestamps are measured with it.
    """

    def __init__(
        self,
        source: str | int | Source,
        *,
        capture_factory: CaptureFactory | None = None,
        queue_size: int = 8,
        reconnect: ReconnectPolicy | None = None,
        max_frames: int | None = None,
        fps: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ):
        if queue_size < 1:
            raise ConfigError(f"queue_size must be 1 or more, got {queue_size}")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames must be 1 or more, got {max_frames}")
        if fps is not None and not fps > 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        self.source = source if isinstance(source, Source) else parse_source(source)
        self.reconnect = reconnect or ReconnectPolicy()
        self.max_frames = max_frames
        self.timeout = timeout
        self.stats = ReaderStats()
        self._factory = capture_factory
        self._clock = clock
        self._queue: queue.Queue[RawFrame] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()  # stop reading; what is queued is still delivered
        self._closed = threading.Event()  # nobody consumes any more
        self._error: BaseException | None = None
        self._handed_out = 0  # frames given to the consumer (max_frames counts these)
        self._thread: threading.Thread | None = None
        self._cap = self._open_first()
        self.info = self._probe(self._cap, fps)

    # -- opening ------------------------------------------------------------------------------
    def _open_first(self) -> Any:
        # a URL is the kind of source that comes and goes, so it gets the reconnection
        # attempts at start too; a missing file or webcam fails at once
        retries = self.reconnect.delays() if self.source.kind == STREAM else []
        for attempt, delay in enumerate([0.0, *retries]):
            time.sleep(delay)
            try:
                return open_source(self.source, self._factory, self.timeout)
            except SourceOpenError:
                if attempt == len(retries):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _probe(self, cap: Any, fps: float | None) -> SourceInfo:
        import cv2

        count = int(capture_property(cap, cv2.CAP_PROP_FRAME_COUNT))
        count = count if count > 0 else 0
        probed = capture_property(cap, cv2.CAP_PROP_FPS)
        if fps is None:
            # streams report 0, 1000 or 90000 when they don't know; keep plausible rates only
            fps = probed if 1.0 <= probed <= 1000.0 else DEFAULT_FPS
        live = self.source.kind == WEBCAM or (self.source.kind == STREAM and count == 0)
        return SourceInfo(
            name=self.source.name,
            fps=float(fps),
            width=int(capture_property(cap, cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture_property(cap, cv2.CAP_PROP_FRAME_HEIGHT)),
            frame_count=min(count, self.max_frames) if self.max_frames and count else count,
            live=live,
        )

    # -- consumer side ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the reading thread (done by the first `next_frame`/`poll`/iteration)."""
        if self._thread is None and not self._closed.is_set():
            self._thread = threading.Thread(target=self._run, name="ovdet-reader", daemon=True)
            self._thread.start()

    def next_frame(self) -> RawFrame | None:
        """The next frame, waiting for it; None when the source has ended or was stopped.

        Raises:
            StreamLostError: the source dropped and could not be reopened (after the frames
                read before that were delivered).
        """
        self.start()
        if self._exhausted():
            return None
        while True:
            try:
                return self._hand_out(self._queue.get(timeout=0.05))
            except queue.Empty:
                # thread first, queue second: once the thread is dead its puts are all visible
                if self._thread is None or not self._thread.is_alive():
                    if self._queue.empty():
                        self._raise_pending()
                        return None

    def poll(self) -> RawFrame | None:
        """A frame if one is queued right now, else None (never waits)."""
        self.start()
        if self._exhausted():
            return None
        try:
            return self._hand_out(self._queue.get_nowait())
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[RawFrame]:
        while (frame := self.next_frame()) is not None:
            yield frame

    def stop(self) -> None:
        """Stop reading; frames already queued are still delivered, then iteration ends."""
        self._stopping.set()

    def close(self) -> None:
        """Stop reading, discard what is queued and release the source."""
        self._stopping.set()
        self._closed.set()
        thread = self._thread
        if thread is None:
            release(self._cap)
            return
        # a read can block (a network read up to `timeout`); past that, leave the daemon
        # thread to release the capture itself when the read returns
        deadline = time.monotonic() + max(self.timeout, 1.0)
        while thread.is_alive() and time.monotonic() < deadline:
            try:  # unblock a producer waiting on a full queue
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _exhausted(self) -> bool:
        return self.max_frames is not None and self._handed_out >= self.max_frames

    def _hand_out(self, frame: RawFrame) -> RawFrame:
        self._handed_out += 1
        if self._exhausted():
            self.stop()
        return frame

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- reading thread -----------------------------------------------------------------------
    def _run(self) -> None:
        cap = self._cap
        try:
            self._read_loop(cap)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._error = exc
        finally:
            release(self._cap)

    def _read_once(self, cap: Any) -> tuple[bool, np.ndarray | None, np.ndarray | None]:
        """(False, None, None) when the read failed (no frame, or the capture raised); (True,
        None, None) when it returned something that is not an image; (True, RGB frame, BGR
        frame as decoded or None) otherwise."""
        try:
            ok, frame = cap.read()
        except Exception:  # noqa: BLE001 - cv2.error on a broken packet, OSError on a socket...
            return False, None, None
        if not ok:
            return False, None, None
        # captures that decode to RGB themselves (frame folders) need no conversion
        if getattr(cap, "frames_rgb", False):
            return True, frame, None
        rgb = to_rgb(frame)
        # the decoded 3-channel frame is kept for drawing, which writes into it (OpenCV's read()
        # allocates a new array per frame); gray or BGRA frames are not BGR images
        bgr = frame if rgb is not None and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8 else None
        return True, rgb, bgr

    def _read_loop(self, cap: Any) -> None:
        info, stats = self.info, self.stats
        index = 0  # source position of the next frame
        bad_reads = 0  # failed reads since the last good frame (files)
        resumed_at = -1  # index where a network video was last reopened
        t0: float | None = None
        while not self._stopping.is_set():
            if self.max_frames is not None and stats.frames >= self.max_frames and not info.live:
                return  # (live frames may still be dropped: the consumer side counts those)
            ok, image, bgr = self._read_once(cap)
            if ok and image is None:  # decoded to garbage: skip it
                stats.corrupt += 1
                index += 1
                continue
            if ok:
                if bad_reads:  # failed reads followed by a good one were corrupt frames
                    stats.corrupt += bad_reads
                    index += bad_reads
                    bad_reads = 0
                if info.live:
                    now = self._clock()
                    t0 = now if t0 is None else t0
                    timestamp = now - t0
                else:
                    timestamp = index / info.fps
                self._put(RawFrame(index, timestamp, image, bgr))
                index += 1
                continue
            # the read failed
            if info.live:
                cap = self._reconnect(cap)
            elif self.source.kind == STREAM:
                if index >= info.frame_count or index == resumed_at:
                    return  # the end, or where it broke off before: that is where it ends
                resumed_at = index
                cap = self._reconnect(cap, skip=index)
            elif info.frame_count and index + bad_reads < info.frame_count and bad_reads < MAX_BAD_READS:
                bad_reads += 1  # maybe a broken frame inside the file: try the next one
                continue
            else:
                return  # end of file
            if cap is None:
                return  # stopped while waiting to reconnect

    def _put(self, frame: RawFrame) -> None:
        if self.info.live:
            while True:
                try:
                    self._queue.put_nowait(frame)
                    break
                except queue.Full:
                    try:  # drop the oldest: a live view wants the newest frames
                        self._queue.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass
        else:
            # a file loses no frame: wait for room (the consumer stopping still gets this one)
            while not self._closed.is_set():
                try:
                    self._queue.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    continue
            else:
                return
        self.stats.frames += 1

    def _reconnect(self, cap: Any, skip: int = 0) -> Any | None:
        """Reopen the source with backoff; skip the first `skip` frames of the new capture.
        Returns the new capture (also stored for release), or None when stopped meanwhile."""
        release(cap)
        policy = self.reconnect
        last = "reconnection is disabled"
        for delay in policy.delays():
            if self._stopping.wait(delay):
                return None
            try:
                new = open_source(self.source, self._factory, self.timeout)
            except SourceOpenError as exc:
                last = str(exc)
                continue
            if skip and not all(self._read_once(new)[0] for _ in range(skip)):
                release(new)
                last = f"the source reopened but broke off again before frame {skip}"
                continue
            self._cap = new
            self.stats.reconnects += 1
            return new
        waited = sum(policy.delays())
        raise StreamLostError(
            f"lost {self.source.name} after {self.stats.frames} frames: "
            f"{policy.attempts} reconnection attempt(s) over {waited:g} s failed ({last})"
        )
