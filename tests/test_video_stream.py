"""`stream()`: batching, laziness, tracking ids, class smoothing, `every` N, and a source that
fails mid-stream, with a stub detector that finds real photo patches in the pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ovdet.video import FrameRecord, ReconnectPolicy, StreamLostError, stream
from ovdet.video.sources import FILE, Source
from test_video_common import (
    FakeCapture,
    ScriptedFactory,
    TemplateDetector,
    cat_patch,
    moving_crop_frames,
    pasted_objects_frames,
    photo,
    write_video,
)

FPS = 12.0
N = 40
CAT_START, CAT_STEP = (4, 8), (3, 1)
FACE_START, FACE_STEP = (136, 90), (-3, 0)


@pytest.fixture(scope="module")
def templates():
    face = cv2.resize(photo("astronaut.jpg")[40:200, 170:330], (48, 48), interpolation=cv2.INTER_AREA)
    return [cat_patch(), face]


@pytest.fixture(scope="module")
def two_objects_video(tmp_path_factory, templates):
    """40 frames at 12 fps: a cat (chelsea.jpg) and a face (astronaut.jpg) gliding on a photo."""
    cat, face = templates
    frames = pasted_objects_frames(N, [(cat, CAT_START, CAT_STEP), (face, FACE_START, FACE_STEP)])
    return write_video(tmp_path_factory.mktemp("video") / "two.mp4", frames, fps=FPS)


def true_box(i: int, start, step, size) -> np.ndarray:
    x, y = start[0] + i * step[0], start[1] + i * step[1]
    return np.array([x, y, x + size[0], y + size[1]], np.float32)


def test_records_and_batches(two_objects_video, templates):
    det = TemplateDetector(templates)
    records = list(stream(det, str(two_objects_video), ["cat", "face"], batch_size=4))
    assert len(records) == N and all(isinstance(r, FrameRecord) for r in records)
    assert det.batches == [4] * 10  # files fill every batch
    r = records[5]
    assert r.index == 5 and r.timestamp == pytest.approx(5 / FPS) and r.detected
    assert r.frame.shape == (144, 192, 3) and r.frame.dtype == np.uint8
    assert r.detections.tracker_ids is None and r.detections.image_size == (144, 192)
    cat = r.detections[r.detections.class_ids == 0]
    assert np.abs(cat.xyxy[0] - true_box(5, CAT_START, CAT_STEP, (56, 40))).max() <= 1
    # the frame as OpenCV decoded it rides along, so drawing needs no conversion back to BGR
    assert r.frame_bgr is not None and np.array_equal(cv2.cvtColor(r.frame_bgr, cv2.COLOR_BGR2RGB), r.frame)
    from ovdet.draw import draw_bgr, draw_on_bgr

    assert np.array_equal(draw_on_bgr(r.frame_bgr.copy(), r.detections), draw_bgr(r.frame, r.detections))


def test_stream_is_lazy():
    frames = moving_crop_frames(1) * 200
    cap = FakeCapture(frames, fail="end", count=200)
    det = TemplateDetector([])
    records = stream(det, Source(FILE, "fake.mp4"), "cat", batch_size=2, capture_factory=lambda s: cap)
    assert cap.reads == 0  # opened, not read
    first = next(records)
    assert first.index == 0 and cap.reads < 20  # a bounded queue ahead, not the whole file
    records.close()


def test_tracking_keeps_ids_on_moving_objects(two_objects_video, templates):
    records = list(stream(TemplateDetector(templates), str(two_objects_video), "cat,face", track=True))
    ids = {0: [], 1: []}
    for r in records:
        assert sorted(r.detections.class_ids.tolist()) == [0, 1]  # both found in every frame
        for cid, tid in zip(r.detections.class_ids.tolist(), r.detections.tracker_ids.tolist()):
            ids[cid].append(tid)
    # each object has its id from its first frame on, and keeps it
    for cid in (0, 1):
        assert len(set(ids[cid])) == 1 and ids[cid][0] >= 0
    assert ids[0][0] != ids[1][0]


def test_every_n_carries_boxes_between_detector_runs(two_objects_video, templates):
    det = TemplateDetector(templates)
    records = list(stream(det, str(two_objects_video), "cat,face", track=True, every=4, batch_size=3))
    assert [r.detected for r in records] == [i % 4 == 0 for i in range(N)]
    assert sum(det.batches) == N // 4 and max(det.batches) == 3
    cat_ids = set()
    for r in records[8:]:  # from the third detector run on, each track has a velocity
        cat = r.detections[r.detections.class_ids == 0]
        assert len(cat) == 1
        cat_ids.add(int(cat.tracker_ids[0]))
        assert np.abs(cat.xyxy[0] - true_box(r.index, CAT_START, CAT_STEP, (56, 40))).max() <= 2.0, r.index
    assert len(cat_ids) == 1 and cat_ids != {-1}
    # without --track the boxes are carried the same way, but no ids are reported
    plain = list(stream(TemplateDetector(templates), str(two_objects_video), "cat,face", every=4))
    assert all(r.detections.tracker_ids is None for r in plain)
    assert np.allclose(plain[13].detections.sorted().xyxy, records[13].detections.sorted().xyxy)


def test_class_smoothing_stops_label_flicker(two_objects_video, templates):
    flip = lambda k: 1 if k % 3 == 2 else None  # every third frame the cat reads as "dog"  # noqa: E731
    raw = list(stream(TemplateDetector(templates[:1], flip=flip), str(two_objects_video), "cat,dog", track=True))
    smoothed = list(stream(TemplateDetector(templates[:1], flip=flip), str(two_objects_video), "cat,dog",
                           track=True, smooth=5))
    raw_labels = [r.detections.labels[0] for r in raw]
    smooth_labels = [r.detections.labels[0] for r in smoothed]
    assert raw_labels.count("dog") == N // 3
    assert smooth_labels == ["cat"] * N
    # the reported score is the class's mean over the window (0 where another class won)
    window = raw[-5:]
    expected = sum(float(r.detections.scores[0]) for r in window if r.detections.labels[0] == "cat") / 5
    assert smoothed[-1].detections.scores[0] == pytest.approx(expected, abs=1e-5)


def test_stream_survives_a_source_failing_mid_stream():
    frames = moving_crop_frames(12)
    factory = ScriptedFactory([
        FakeCapture(frames[:5], fail="raise"),  # connection reset after 5 frames
        FakeCapture(frames[5:9], fail="none"),  # back; then no frame any more
        None,                                   # the first reopening fails, the next works
        FakeCapture(frames[9:], fail="none"),
    ])
    det = TemplateDetector([])
    # a queue larger than the clip: a live source drops frames the consumer is late for, and
    # this test is about reconnection, not drops
    records = stream(det, "rtsp://127.0.0.1:8554/cam", "cat", capture_factory=factory, queue_size=32,
                     reconnect=ReconnectPolicy(attempts=2, delay=0.001), max_frames=12)
    got = [r.index for r in records]
    assert got == list(range(12))
    assert records.stats.reconnects == 2 and factory.opens == 4


def test_stream_loss_raises_after_delivering_what_was_read():
    factory = ScriptedFactory([FakeCapture(moving_crop_frames(7), fail="none")])
    records = stream(TemplateDetector([]), "rtsp://127.0.0.1:8554/cam", "cat", capture_factory=factory,
                     reconnect=ReconnectPolicy(attempts=2, delay=0.001), batch_size=4, queue_size=32)
    got = []
    with pytest.raises(StreamLostError, match="lost rtsp://127.0.0.1:8554/cam after 7 frames: 2 reconnection"):
        for r in records:
            got.append(r.index)
    assert got == list(range(7))


def test_argument_errors():
    from ovdet.errors import OvdetError

    for kwargs, message in [
        (dict(every=0), "every must be 1 or more"),
        (dict(smooth=3), "class smoothing works on tracks"),
        (dict(batch_size=0), "batch_size must be 1 or more"),
    ]:
        with pytest.raises(OvdetError, match=message):
            stream(TemplateDetector([]), "rtsp://127.0.0.1:1/x", "cat", **kwargs)


class _SlowDetector(TemplateDetector):
    def detect_batch(self, images, classes):
        import time

        time.sleep(0.02)  # slower than the camera: frames pile up and the oldest are dropped
        return super().detect_batch(images, classes)


def test_live_source_batches_what_is_queued_and_drops_the_rest():
    camera = FakeCapture(moving_crop_frames(1) * 2000, interval=0.002)  # a 500 fps camera
    det = _SlowDetector([])
    records = stream(det, "0", "cat", batch_size=4, max_frames=24, capture_factory=lambda s: camera)
    assert records.info.live
    got = [r.index for r in records]
    assert len(got) == 24 and got == sorted(set(got))
    assert got[-1] > 30 and records.stats.dropped > 0  # kept up by skipping, not by falling behind
    assert max(det.batches) <= 4 and sum(det.batches) == 24
    assert camera.released


def test_tracking_without_the_trackers_package_is_a_clear_error(monkeypatch):
    import sys

    from ovdet.errors import OvdetError

    monkeypatch.setitem(sys.modules, "trackers", None)  # as if not installed
    cap = FakeCapture(moving_crop_frames(2), fail="end", count=2)
    with pytest.raises(OvdetError, match="tracking needs the 'trackers' package .*: pip install trackers"):
        stream(TemplateDetector([]), Source(FILE, "fake.mp4"), "cat", track=True, capture_factory=lambda s: cap)
    assert cap.released  # the source opened for it is not leaked
