"""`stream()`: a source's frames -> batched detection -> optional tracking -> one record per
frame, produced lazily as the caller iterates.

    for rec in stream(det, "clip.mp4", ["cat", "dog"], track=True):
        rec.index, rec.timestamp, rec.frame, rec.detections

Detection runs on every `every`-th frame, `batch_size` of those per forward pass; frames in
between get the tracker's carried boxes. Files are batched in full; live sources take what is
queued (at most a batch), so results do not wait for frames that have not arrived yet.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import ConfigError
from ..structures import Detections
from ..exemplars import validate_classes
from .frames import RawFrame, ReaderStats, ReconnectPolicy, SourceInfo
from .reader import FrameReader
from .sources import DEFAULT_TIMEOUT, CaptureFactory, Source
from .tracking import FrameTracker, TrackSettings


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """Results for one frame.

    Attributes:
        index: the frame's position in the source (0-based; gaps are dropped/corrupt frames).
        timestamp: seconds from the start (index / fps for files; wall clock for live sources).
        frame: (H, W, 3) RGB uint8, as read.
        detections: boxes in xyxy pixels of `frame`; `tracker_ids` set when tracking (-1 for
            a detection not yet confirmed as a track).
        detected: True when the detector ran on this frame; False when the boxes were
            carried over from the last detector run (`every` > 1).
        frame_bgr: the same frame as OpenCV decoded it, (H, W, 3) BGR uint8, for sources it
            decodes (files, cameras, streams); None for frame folders. Drawing on it needs no
            conversion back from `frame`.
    """

    index: int
    timestamp: float
    frame: np.ndarray
    detections: Detections
    detected: bool
    frame_bgr: np.ndarray | None = None  # the frame as OpenCV decoded it (BGR), when it did


class FrameStream:
    """Iterator of `FrameRecord`s over an opened source; see `stream()`.

    Attributes:
        info: the source's `SourceInfo` (fps, size, frame count, live).
        stats: the reader's live counters (frames, dropped, corrupt, reconnects).
    """

    def __init__(
        self,
        detector: Any,
        reader: FrameReader,
        classes: Sequence[str],
        *,
        every: int,
        batch_size: int,
        tracker: FrameTracker | None,
        expose_ids: bool,
        max_frames: int | None,
    ):
        self.detector = detector
        self.classes = tuple(classes)
        self.every = every
        self.batch_size = batch_size
        self._reader = reader
        self._tracker = tracker
        self._expose_ids = expose_ids
        self._max_frames = max_frames
        self._taken = 0  # frames taken from the reader; decides which ones the detector sees
        self._records = self._generate()

    @property
    def info(self) -> SourceInfo:
        return self._reader.info

    @property
    def stats(self) -> ReaderStats:
        return self._reader.stats

    def __iter__(self) -> "FrameStream":
        return self

    def __next__(self) -> FrameRecord:
        return next(self._records)

    def stop(self) -> None:
        """Stop reading; frames already queued are still processed and yielded, then the
        iteration ends. Safe to call from a signal handler."""
        self._reader.stop()

    def close(self) -> None:
        """Stop at once, discarding queued frames, and release the source."""
        self._reader.close()
        self._records.close()

    def __enter__(self) -> "FrameStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the pipeline ---------------------------------------------------------------------------
    def _generate(self) -> Iterator[FrameRecord]:
        try:
            while True:
                chunk, error = self._collect()
                yield from self._process(chunk)
                if error is not None:
                    raise error  # after the frames read before it: nothing processed is lost
                if not chunk or (self._max_frames is not None and self._taken >= self._max_frames):
                    return
        finally:
            self._reader.close()

    def _collect(self) -> tuple[list[tuple[RawFrame, bool]], BaseException | None]:
        """Frames up to (not including) the detector frame that would overflow the batch."""
        chunk: list[tuple[RawFrame, bool]] = []
        detector_frames = 0
        live = self._reader.info.live
        try:
            while self._max_frames is None or self._taken < self._max_frames:
                for_detector = self._taken % self.every == 0
                if for_detector and detector_frames == self.batch_size:
                    break
                # a live source must not wait for frames to fill a batch: take what is queued
                frame = self._reader.poll() if (live and chunk) else self._reader.next_frame()
                if frame is None:
                    break
                chunk.append((frame, for_detector))
                detector_frames += for_detector
                self._taken += 1
        except Exception as exc:  # noqa: BLE001 - e.g. StreamLostError, raised after this chunk
            return chunk, exc
        return chunk, None

    def _process(self, chunk: list[tuple[RawFrame, bool]]) -> Iterator[FrameRecord]:
        images = [frame.image for frame, for_detector in chunk if for_detector]
        results = iter(self._detect(images) if images else [])
        for frame, for_detector in chunk:
            h, w = frame.image.shape[:2]
            if for_detector:
                dets = next(results)
                if self._tracker is not None:
                    dets = self._tracker.update(dets, frame.timestamp, frame.index)
            else:
                dets = self._tracker.carry(frame.index, (h, w))
            if not self._expose_ids and dets.tracker_ids is not None:
                dets = dets.replace(tracker_ids=None)  # carried for `every`, not asked for
            yield FrameRecord(frame.index, frame.timestamp, frame.image, dets, for_detector, frame.bgr)

    def _detect(self, images: list[np.ndarray]) -> list[Detections]:
        results = list(self.detector.detect_batch(images, self.classes))
        if len(results) != len(images):
            raise RuntimeError(f"detector returned {len(results)} results for {len(images)} frames")
        return results


def default_queue_size(batch_size: int) -> int:
    """Frames the reader buffers: one batch ahead keeps the detector busy (decoding is far
    faster than detection); more would only add latency for live sources and work to finish
    after a stop."""
    return max(2, batch_size)


def _batch_size(detector: Any, batch_size: int | None) -> int:
    if batch_size is None:
        batch_size = getattr(getattr(detector, "config", None), "batch_size", 4)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be 1 or more, got {batch_size}")
    return int(batch_size)


def stream(
    detector: Any,
    source: str | int | Source | FrameReader,
    classes: str | Iterable[Any],
    track: bool = False,
    every: int = 1,
    batch_size: int | None = None,
    *,
    smooth: int = 0,
    max_frames: int | None = None,
    fps: float | None = None,
    reconnect: ReconnectPolicy | int | None = None,
    queue_size: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    track_settings: TrackSettings | None = None,
    capture_factory: CaptureFactory | None = None,
) -> FrameStream:
    """Detect `classes` in every frame of `source`, lazily.

    The source is opened here, so a missing file, a bad webcam index or an unsupported URL
    scheme raises at once (an `OvdetError` subclass); reading starts on the first iteration.

    Args:
        detector: anything with `detect_batch(list of (H, W, 3) RGB uint8, classes) ->
            list[Detections]`, e.g. `ovdet.Detector`.
        source: a video file, webcam index, rtsp(s)/http(s) URL, folder or glob of frames, or
            an opened `FrameReader`.
        classes: class names, as a list or a comma-separated string; the list may mix in
            `ovdet.Example`s (image exemplars).
        track: assign ByteTrack ids (`Detections.tracker_ids`).
        every: run the detector on every Nth frame; boxes in between are carried by the tracker.
        batch_size: detector frames per forward pass (default: the detector's config).
        smooth: with `track`, average class scores over a track's last `smooth` detector runs.
        max_frames: stop after this many frames.
        fps: frame rate to assume instead of the source's (frame folders report none).
        reconnect: `ReconnectPolicy`, or a number of attempts (default 5, first wait 1 s).
        queue_size: frames buffered by the reading thread (default `default_queue_size`).
        timeout: seconds a network open or read may block.
        track_settings: ByteTrack thresholds (see `TrackSettings`); `smooth` overrides its
            window when given.
        capture_factory: `(Source) -> capture` replacing OpenCV (tests inject failing sources).

    Returns:
        A `FrameStream`: iterate it for `FrameRecord`s; `.stop()` ends it gracefully,
        `.info` / `.stats` describe the source.
    """
    names = validate_classes(classes)  # fail before opening anything (names and/or exemplars)
    if every < 1:
        raise ConfigError(f"every must be 1 or more, got {every}")
    if smooth < 0:
        raise ConfigError(f"smooth must be 0 (off) or 1 or more, got {smooth}")
    if smooth and not track:
        raise ConfigError("class smoothing works on tracks: use it together with tracking")
    size = _batch_size(detector, batch_size)
    if isinstance(source, FrameReader):
        reader = source
    else:
        if isinstance(reconnect, int):
            reconnect = ReconnectPolicy(attempts=reconnect)
        reader = FrameReader(
            source,
            capture_factory=capture_factory,
            queue_size=queue_size or default_queue_size(size),
            reconnect=reconnect,
            max_frames=max_frames,
            fps=fps,
            timeout=timeout,
        )
    tracker = None
    if track or every > 1:
        settings = track_settings or TrackSettings()
        if smooth:
            settings = dataclasses.replace(settings, smooth=smooth)
        try:
            # without --track the tracker still carries boxes between detector runs; its ids
            # are just not shown
            tracker = FrameTracker(settings, fps=reader.info.fps)
        except BaseException:
            reader.close()
            raise
    return FrameStream(
        detector, reader, names, every=every, batch_size=size, tracker=tracker,
        expose_ids=track, max_frames=max_frames,
    )
