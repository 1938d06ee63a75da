"""Track ids across frames (ByteTrack), track-level class smoothing, and boxes carried between
detector runs.

ByteTrack comes from Roboflow's `trackers` package: supervision 0.31 no longer ships
`sv.ByteTrack` and its own smoothing tools import `trackers.ByteTrackTracker` instead.
Boxes are xyxy pixels throughout.

Masks follow their detections: ByteTrack sees boxes only and the masks are picked back by row
(never an (N, H, W) array per frame); on a carried frame each mask moves with its box's centre,
rounded to whole pixels, its shape kept from the last detector frame (SAM is not run on
frames the detector skips).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..adapters import from_supervision, to_supervision
from ..errors import ConfigError, OvdetError
from ..instance_masks import Masks
from ..structures import Detections


@dataclass(frozen=True)
class TrackSettings:
    """ByteTrack and smoothing settings.

    The thresholds are on ovdet's calibrated [0, 1] scores, which run lower than a closed-set
    detector's (OWLv2's preset cut is 0.2), hence defaults below ByteTrack's usual 0.6/0.7.

    Attributes:
        high_threshold: detections at or above take part in ByteTrack's first association
            pass; the rest only extend existing tracks.
        activation_threshold: lowest score that starts a new track.
        min_iou: lowest IoU between a track's predicted box and a detection to match them.
        lost_seconds: how long a track survives without a matching detection.
        smooth: class smoothing window in detector runs; 0 = off. With it, a track's class is
            the one with the highest mean score over its last `smooth` detections (a run where
            another class won counts as 0 for this one), and the reported score is that mean.
    """

    high_threshold: float = 0.3
    activation_threshold: float = 0.3
    min_iou: float = 0.2
    lost_seconds: float = 1.0
    smooth: int = 0

    def __post_init__(self) -> None:
        if self.smooth < 0:
            raise ConfigError(f"smooth must be 0 (off) or a window of 1 or more detector runs, got {self.smooth}")
        if self.lost_seconds < 0:
            raise ConfigError(f"lost_seconds must be 0 or more, got {self.lost_seconds}")


def _bytetrack(settings: TrackSettings, fps: float):
    try:
        from trackers import ByteTrackTracker
    except ImportError as exc:
        raise OvdetError(
            "tracking needs the 'trackers' package (supervision no longer ships ByteTrack): pip install trackers"
        ) from exc
    return ByteTrackTracker(
        lost_track_buffer=max(1, round(settings.lost_seconds * 30)),  # counted in 30 fps frames
        frame_rate=fps,
        track_activation_threshold=settings.activation_threshold,
        minimum_iou_threshold=settings.min_iou,
        high_conf_det_threshold=settings.high_threshold,
        minimum_consecutive_frames=2,  # a box seen once and never again is dropped as noise
    )


class TrackIds:
    """Track ids from the first sighting.

    ByteTrack (the `trackers` package) reports a new track with id -1 until it has been seen
    on `minimum_consecutive_frames` frames, so every object's first frame had no id. This maps
    ByteTrack's track objects (its public `tracks` list) to ovdet's own ids, handed out when a
    track is born: the first frame already carries the id the object keeps. A track that dies
    after one frame leaves a gap in the numbering. Rows ByteTrack leaves untracked (a
    low-score box that matches no track) stay -1.
    """

    def __init__(self):
        self._next = 0
        self._ids: dict[int, tuple[object, int]] = {}  # id(track object) -> (object, ovdet id)

    def assign(self, tracker, boxes: np.ndarray, bytetrack_ids: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy boxes and ByteTrack's (N,) ids from its last update -> (N,) ovdet ids."""
        tracks = list(tracker.tracks)
        alive = {id(t) for t in tracks}
        self._ids = {k: v for k, v in self._ids.items() if k in alive}  # forget dead tracks
        by_bytetrack = {t.tracker_id: t for t in tracks if t.tracker_id >= 0}
        newborn = [t for t in tracks if t.tracker_id < 0 and id(t) not in self._ids]
        out = np.full(len(boxes), -1, np.int64)
        for row, (box, bid) in enumerate(zip(boxes, bytetrack_ids.tolist())):
            track = by_bytetrack.get(bid) if bid >= 0 else None
            if track is None and bid < 0:
                # a track born on this frame starts at its detection's box exactly
                track = next((t for t in newborn if np.allclose(t.get_state_bbox(), box, atol=1e-3)), None)
                if track is not None:
                    newborn.remove(track)
            if track is None:
                continue
            if id(track) not in self._ids:
                self._ids[id(track)] = (track, self._next)
                self._next += 1
            out[row] = self._ids[id(track)][1]
        return out

    def alive(self) -> set[int]:
        """The ovdet ids of the tracks ByteTrack still keeps (lost ones included)."""
        return {ovdet_id for _, ovdet_id in self._ids.values()}


class ClassSmoother:
    """Per-track class votes over the last `window` detector runs.

    Each run adds {class_id: score} for a track; the smoothed class is the argmax of the mean
    score per class over the window (absent = 0), so one off-class frame does not flip a label.
    """

    def __init__(self, window: int, num_classes: int):
        self.window = window
        self.num_classes = num_classes
        self._history: dict[int, deque[tuple[int, float]]] = {}

    def update(self, dets: Detections) -> Detections:
        """Record this run's (class, score) per track id >= 0 and return `dets` with smoothed
        class_ids and scores; untracked rows (id -1) pass unchanged."""
        if dets.tracker_ids is None or not len(dets):
            return dets
        class_ids = dets.class_ids.copy()
        scores = dets.scores.copy()
        for row, (tid, cid, score) in enumerate(zip(dets.tracker_ids.tolist(), dets.class_ids.tolist(), dets.scores.tolist())):
            if tid < 0:
                continue
            history = self._history.setdefault(tid, deque(maxlen=self.window))
            history.append((cid, score))
            means = np.zeros(self.num_classes, np.float64)
            for c, s in history:
                means[c] += s
            means /= len(history)
            class_ids[row] = int(np.argmax(means))
            scores[row] = means[class_ids[row]]
        return dets.replace(class_ids=class_ids, scores=scores)

    def forget(self, alive: set[int]) -> None:
        """Drop the history of tracks that are gone (keeps memory flat over hours of video)."""
        for tid in [t for t in self._history if t not in alive]:
            del self._history[tid]


class FrameTracker:
    """Assigns track ids on detector frames and carries boxes over the frames in between.

        tracker = FrameTracker(TrackSettings(), fps=25)
        dets = tracker.update(detections, timestamp=t, index=i)   # frame the detector saw
        dets = tracker.carry(index=i + 1)                          # frame it skipped

    `update` returns every input detection with `tracker_ids` set (from the object's first
    frame on; -1 only for low-score boxes that match no track); `carry` returns the last result with each tracked box moved by
    its track's velocity (pixels per frame, from its last two detector runs), clipped to the
    image.
    """

    def __init__(self, settings: TrackSettings | None = None, fps: float = 30.0):
        self.settings = settings or TrackSettings()
        self._tracker = _bytetrack(self.settings, fps)
        self._ids = TrackIds()
        self._smoother: ClassSmoother | None = None
        self._last: Detections | None = None
        self._last_index = 0
        self._velocity = np.zeros((0, 4), np.float32)
        self._seen: dict[int, tuple[int, np.ndarray]] = {}  # track id -> (frame index, box)

    def update(self, dets: Detections, timestamp: float, index: int) -> Detections:
        """Track `dets`, found on frame `index` at `timestamp` seconds."""
        given = to_supervision(dets.replace(masks=None))  # boxes only: masks are picked back by row
        given.data["ovdet_row"] = np.arange(len(dets))
        tracked_sv = self._tracker.update(given, timestamp=float(timestamp))
        tracked_sv.tracker_id = self._ids.assign(self._tracker, tracked_sv.xyxy, tracked_sv.tracker_id)
        tracked = from_supervision(tracked_sv, dets.class_names, dets.image_size)
        if dets.masks is not None:
            tracked = tracked.replace(masks=dets.masks[np.asarray(tracked_sv.data["ovdet_row"], np.int64)])
        if self.settings.smooth:
            if self._smoother is None:
                self._smoother = ClassSmoother(self.settings.smooth, len(dets.class_names))
            tracked = self._smoother.update(tracked)
        velocity = np.zeros((len(tracked), 4), np.float32)
        seen: dict[int, tuple[int, np.ndarray]] = {}
        for row, tid in enumerate(tracked.tracker_ids.tolist()):
            if tid < 0:
                continue
            box = tracked.xyxy[row]
            if tid in self._seen:
                before, old_box = self._seen[tid]
                velocity[row] = (box - old_box) / max(1, index - before)
            seen[tid] = (index, box)
        self._seen = seen  # only tracks on this frame: a track's velocity needs its last two sightings
        if self._smoother is not None:
            self._smoother.forget(self._ids.alive() | set(seen))
        self._last, self._last_index, self._velocity = tracked, index, velocity
        return tracked.sorted()  # ByteTrack returns its own order; callers get best-first

    def carry(self, index: int, image_size: tuple[int, int] | None = None) -> Detections:
        """Boxes for frame `index`, which the detector skipped: the last result moved on (masks
        moved with their boxes' centres)."""
        if self._last is None:
            raise RuntimeError("FrameTracker.carry called before any update")
        last = self._last
        h, w = image_size or last.image_size
        steps = index - self._last_index
        xyxy = last.xyxy + self._velocity * steps
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, w)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, h)
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])  # moved out of view
        masks = last.masks
        if masks is not None:
            shift = np.rint((self._velocity[:, :2] + self._velocity[:, 2:]) / 2 * steps).astype(np.int64)
            masks = Masks.concat([Masks.empty((h, w))] + [masks[i].translate(int(dx), int(dy), (h, w))
                                                         for i, (dx, dy) in enumerate(shift.tolist())])
        return last.replace(xyxy=xyxy, image_size=(h, w), masks=masks)[keep]
