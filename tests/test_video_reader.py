"""Background reading: no frame lost from files, drops counted on live sources, reconnection
after a source fails mid-stream, corrupt frames skipped and counted."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ovdet.video.errors import StreamLostError
from ovdet.video.reader import FrameReader, ReconnectPolicy
from ovdet.video.sources import FILE, Source
from test_video_common import FakeCapture, FlakyVideoServer, ScriptedFactory, moving_crop_frames, write_video

FAST = ReconnectPolicy(attempts=3, delay=0.001, max_delay=0.01)


def test_file_loses_no_frame_with_a_slow_consumer(tmp_path):
    frames = moving_crop_frames(20)
    video = write_video(tmp_path / "clip.avi", frames, fps=12)
    with FrameReader(str(video), queue_size=2) as reader:
        got = []
        for frame in reader:
            time.sleep(0.005)  # slower than decoding: the reader must wait, not drop
            got.append(frame)
    assert [f.index for f in got] == list(range(20))
    assert [f.timestamp for f in got] == pytest.approx([i / 12 for i in range(20)])
    assert reader.stats.dropped == 0 and reader.stats.frames == 20
    assert got[0].image.shape == (144, 192, 3) and got[0].image.dtype == np.uint8
    # RGB, not OpenCV's BGR: MJPG is lossy, so compare channel means
    assert np.abs(got[0].image.mean((0, 1)) - frames[0].mean((0, 1))).max() < 3


def test_live_source_drops_oldest_and_counts(tmp_path):
    frames = moving_crop_frames(1)
    endless = FakeCapture(frames * 400, count=0, interval=0.002)  # count 0: a live camera at 500 fps
    reader = FrameReader("0", capture_factory=lambda src: endless, queue_size=2, max_frames=15)
    assert reader.info.live
    got = []
    for frame in reader:
        time.sleep(0.01)  # the consumer falls behind
        got.append(frame.index)
    reader.close()
    assert len(got) == 15  # max_frames counts frames handed out, not frames dropped
    assert reader.stats.dropped > 0
    assert got == sorted(set(got)) and got[-1] > 14  # newest frames, gaps where frames were dropped
    gaps = sum(b - a - 1 for a, b in zip(got, got[1:]))
    assert gaps <= reader.stats.dropped
    assert endless.released


@pytest.mark.parametrize("fail", ["none", "raise"])
def test_live_source_reconnects_after_failing_mid_stream(fail):
    frames = moving_crop_frames(6)
    factory = ScriptedFactory([
        FakeCapture(frames[:4], fail=fail),   # drops after 4 frames
        None,                                  # first reopen fails
        FakeCapture(frames[4:], fail=fail),    # second reopen works: 2 more frames, then drops
        None, None, None,                      # ... and never comes back
    ])
    reader = FrameReader("rtsp://127.0.0.1:8554/cam", capture_factory=factory, reconnect=FAST)
    assert reader.info.live  # a stream of unknown length
    got = []
    with pytest.raises(StreamLostError) as err:
        for frame in reader:
            got.append(frame)
    assert len(got) == 6  # every frame read before the loss was delivered
    assert [f.index for f in got] == list(range(6))
    assert reader.stats.reconnects == 1 and factory.opens == 6
    assert str(err.value) == (
        "lost rtsp://127.0.0.1:8554/cam after 6 frames: 3 reconnection attempt(s) over 0.007 s failed "
        "(cannot connect to rtsp://127.0.0.1:8554/cam: no video stream answered within 10 s)"
    )


def test_reconnection_disabled():
    factory = ScriptedFactory([FakeCapture(moving_crop_frames(2), fail="raise")])
    reader = FrameReader("0", capture_factory=factory, reconnect=ReconnectPolicy(attempts=0))
    with pytest.raises(StreamLostError, match="lost webcam 0 after 2 frames: 0 reconnection attempt"):
        list(reader)


def test_stream_retries_at_start_then_reports():
    factory = ScriptedFactory([None, None, FakeCapture(moving_crop_frames(3), fail="end", count=3)])
    reader = FrameReader("http://127.0.0.1:9/clip.mp4", capture_factory=factory, reconnect=FAST)
    assert not reader.info.live and reader.info.frame_count == 3  # a remote file: no drops
    assert len(list(reader)) == 3
    with pytest.raises(Exception, match="cannot connect to http://127.0.0.1:9/x"):
        FrameReader("http://127.0.0.1:9/x", capture_factory=ScriptedFactory([]), reconnect=FAST)


def test_corrupt_frames_in_a_file_are_skipped_and_counted():
    frames = moving_crop_frames(10)
    cap = FakeCapture(frames, fail="end", count=10, bad={3, 7})
    reader = FrameReader(Source(FILE, "fake.mp4"), capture_factory=lambda src: cap)
    got = list(reader)
    assert [f.index for f in got] == [0, 1, 2, 4, 5, 6, 8, 9]  # source positions kept
    assert reader.stats.corrupt == 2 and reader.stats.frames == 8


def test_corrupt_image_in_a_frame_folder(tmp_path):
    import cv2

    for i, frame in enumerate(moving_crop_frames(5)):
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), frame[..., ::-1])
    (tmp_path / "f002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    reader = FrameReader(str(tmp_path), fps=5)
    got = list(reader)
    assert [f.index for f in got] == [0, 1, 3, 4]
    assert [f.timestamp for f in got] == pytest.approx([0, 0.2, 0.6, 0.8])
    assert reader.stats.corrupt == 1


def test_max_frames_and_stop():
    frames = moving_crop_frames(12)
    reader = FrameReader("0", capture_factory=lambda src: FakeCapture(frames, fail="end", count=12), max_frames=5)
    assert len(list(reader)) == 5
    cap = FakeCapture(frames * 10, count=120)
    reader = FrameReader(Source(FILE, "fake.mp4"), capture_factory=lambda src: cap, queue_size=3)
    first = reader.next_frame()
    reader.stop()  # stop reading; what is queued is still delivered, then the end
    rest = list(reader)
    assert first.index == 0 and len(rest) <= 4 and cap.reads < 10


def test_http_video_cut_off_resumes_without_repeating(tmp_path):
    video = write_video(tmp_path / "clip.avi", moving_crop_frames(30), fps=15)
    server = FlakyVideoServer(video.read_bytes(), later="full")
    try:
        reader = FrameReader(server.url, reconnect=FAST, timeout=5)
        assert not reader.info.live and reader.info.frame_count == 30
        got = [f.index for f in reader]
    finally:
        server.close()
    assert got == list(range(30))  # every frame exactly once
    assert reader.stats.reconnects == 1 and server.requests == 2


def test_http_video_cut_off_for_good_is_a_clear_error(tmp_path):
    video = write_video(tmp_path / "clip.avi", moving_crop_frames(30), fps=15)
    server = FlakyVideoServer(video.read_bytes(), later="refuse")
    try:
        reader = FrameReader(server.url, reconnect=FAST, timeout=5)
        got = []
        with pytest.raises(StreamLostError, match=r"lost http://127\.0\.0\.1:\d+/clip\.avi after \d+ frames: "
                                                  r"3 reconnection attempt\(s\)"):
            for frame in reader:
                got.append(frame.index)
    finally:
        server.close()
    assert 0 < len(got) < 30 and got == list(range(len(got)))
    assert server.requests == 4
