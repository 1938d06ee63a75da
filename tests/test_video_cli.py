"""`ovdet video` end to end: a video made from a photograph through the tiny model, outputs
that keep size and frame rate, a stream lost for good, and Ctrl-C / SIGTERM in a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ovdet.files import JsonlWriter
from ovdet.video.writer import VideoFileWriter
from test_video_common import (
    ROOT,
    FlakyVideoServer,
    TemplateDetector,
    cli,
    moving_crop_frames,
    read_video,
    write_video,
)

FPS = 12.0


def jsonl_records(path):
    text = path.read_text()
    assert text.endswith("\n"), "last line is incomplete"
    return [json.loads(line) for line in text.splitlines()]


def test_video_end_to_end_with_tiny_model(tiny_owlv2, tmp_path, capfd):
    frames = moving_crop_frames(24)  # a window sliding over astronaut.jpg
    video = write_video(tmp_path / "in.mp4", frames, fps=FPS)
    out, jsonl = tmp_path / "out" / "annotated.mp4", tmp_path / "out" / "frames.jsonl"
    code = cli([video, "--classes", "person,flag", "--model", tiny_owlv2, "--device", "cpu",
                "--threshold", "0.3", "--batch-size", "3", "--track", "--out", out, "--jsonl", jsonl])
    err = capfd.readouterr().err
    assert code == 0, err
    n_in = read_video(video)[0]
    records = jsonl_records(jsonl)
    n_out, fps, size = read_video(out)
    assert n_in == len(records) == n_out == 24  # frames in == JSONL lines == frames out
    assert fps == pytest.approx(FPS) and size == (192, 144)
    assert [r["frame"] for r in records] == list(range(24))
    assert [r["time"] for r in records] == pytest.approx([i / FPS for i in range(24)], abs=1e-4)
    dets = [d for r in records for d in r["detections"]]
    assert dets, "the tiny model finds something at this threshold"
    for d in dets:
        assert set(d) == {"box", "score", "class_id", "class_name", "raw_score", "track_id"}
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= 192 and 0 <= y1 < y2 <= 144 and 0.3 < d["score"] <= 1
        assert d["class_name"] == ["person", "flag"][d["class_id"]] and d["track_id"] >= -1
    assert any(d["track_id"] >= 0 for d in dets)
    summary = [line for line in err.splitlines() if line.startswith("ovdet: 24 frames")]
    assert summary and "dropped 0, corrupt 0, reconnects 0" in summary[0], err
    assert f"{len(dets)} detections" in summary[0]


def test_python_api_with_tiny_model(tiny_owlv2, tmp_path):
    from ovdet import Detector
    from ovdet.video import stream

    video = write_video(tmp_path / "in.avi", moving_crop_frames(6), fps=FPS)
    det = Detector.from_pretrained(tiny_owlv2, device="cpu")
    assert not hasattr(Detector, "stream")  # video is a feature above the core
    records = stream(det, str(video), ["person", "flag"], track=True, every=2)
    got = list(records)
    assert [r.index for r in got] == list(range(6)) and [r.detected for r in got] == [True, False] * 3
    for r in got:
        assert r.frame.shape == (144, 192, 3) and r.frame.dtype == np.uint8
        assert r.timestamp == pytest.approx(r.index / FPS)
        assert r.detections.tracker_ids is not None and r.detections.class_names == ("person", "flag")


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
def test_video_writer_keeps_size_and_fps(tmp_path, suffix):
    frames = moving_crop_frames(7)
    path = tmp_path / f"out{suffix}"
    with VideoFileWriter(path, fps=7.5, size=(192, 144)) as writer:
        for frame in frames:
            writer.write(frame)
        writer.write(np.zeros((50, 60, 3), np.uint8))  # another size: resized, not dropped
    assert read_video(path) == (8, pytest.approx(7.5), (192, 144))


def test_overlay_draws_boxes_in_rgb():
    from ovdet.structures import Detections
    from ovdet.draw import annotate as annotate_frame, draw_bgr

    frame = np.full((144, 192, 3), 128, np.uint8)
    dets = Detections(xyxy=[[40, 50, 120, 110]], scores=[0.9], class_ids=[0], class_names=("cat",),
                      image_size=(144, 192), tracker_ids=[7])
    rgb, bgr = annotate_frame(frame, dets), draw_bgr(frame, dets)
    assert rgb.shape == frame.shape and np.array_equal(rgb, bgr[..., ::-1])
    assert (rgb[80, 40] != 128).any() and (rgb[130, 180] == 128).all()  # on the box edge, far from it
    assert (frame == 128).all()  # the input frame is not drawn on


def test_jsonl_writer_whole_lines(tmp_path):
    path = tmp_path / "a" / "f.jsonl"
    with JsonlWriter(path) as out:
        out.write({"frame": 0, "detections": []})
        assert path.read_text() == '{"frame":0,"detections":[]}\n'  # flushed at once, whole
        out.write({"frame": 1, "name": "café"})
    assert len(jsonl_records(path)) == 2


def test_model_warms_up_on_one_blank_batch_before_the_clock(tiny_owlv2, tmp_path, capfd, monkeypatch):
    """The first pass's one-time costs (kernel set-up, the vocabulary) are paid before the
    frame rate's clock starts: one full batch of blank frames of the video's size, then every
    frame once."""
    from ovdet.detector import Detector

    calls = []
    real = Detector.detect_batch

    def recording(self, images, classes, *args, **kwargs):
        calls.append([np.asarray(im).copy() for im in images])
        return real(self, images, classes, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect_batch", recording)
    video = write_video(tmp_path / "in.mp4", moving_crop_frames(7), fps=FPS)
    code = cli([video, "--classes", "person", "--model", tiny_owlv2, "--device", "cpu", "--batch-size", "3",
                "--jsonl", tmp_path / "r.jsonl", "--no-progress"])
    err = capfd.readouterr().err
    assert code == 0, err
    warm, *frames = calls
    assert len(warm) == 3 and all(im.shape == (144, 192, 3) and not im.any() for im in warm)
    assert [len(batch) for batch in frames] == [3, 3, 1] and all(im.any() for b in frames for im in b)
    assert re.search(r"ovdet: 7 frames, .*\(\d+\.\d fps\).*; model warm-up \d+\.\d s$", err, re.M), err


def test_stream_lost_for_good_exits_2_with_outputs_closed(tmp_path, capfd, monkeypatch):
    from ovdet.detector import Detector

    stub = TemplateDetector([])
    monkeypatch.setattr(Detector, "from_config", classmethod(lambda cls, cfg, download=True: stub))
    video = write_video(tmp_path / "clip.avi", moving_crop_frames(30), fps=15)
    server = FlakyVideoServer(video.read_bytes(), later="refuse")  # cut off halfway, then 503
    out, jsonl = tmp_path / "out.avi", tmp_path / "out.jsonl"
    try:
        code = cli([server.url, "--classes", "cat", "--reconnect", "2", "--reconnect-delay", "0.01",
                    "--out", out, "--jsonl", jsonl, "--no-progress"])
    finally:
        server.close()
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert lines[-1].startswith(f"ovdet: error: lost {server.url} after ")
    assert "2 reconnection attempt(s) over 0.03 s failed" in lines[-1]
    n = len(jsonl_records(jsonl))
    assert 0 < n < 30 and read_video(out)[0] == n  # what was processed is kept, and plays
    assert lines[-2].startswith(f"ovdet: {n} frames")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_leaves_playable_video_and_whole_jsonl(tiny_owlv2, tmp_path, sig):
    video = write_video(tmp_path / "long.mp4", moving_crop_frames(300), fps=FPS)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovdet", "video", str(video), "--classes", "person",
         "--model", str(tiny_owlv2), "--device", "cpu", "--batch-size", "2",
         "--out", str(out), "--jsonl", str(jsonl)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (jsonl.exists() and jsonl.read_text().count("\n") >= 4):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    records = jsonl_records(jsonl)
    n = len(records)
    assert [r["frame"] for r in records] == list(range(n)) and 4 <= n < 300
    n_video, fps, size = read_video(out)  # the container was closed: it opens and plays
    assert n_video == n and fps == pytest.approx(FPS) and size == (192, 144)
    assert f"ovdet: stopped: {n} frames" in err, err


class _SignalingDetector(TemplateDetector):
    """Sends this process SIGINT from inside detection on the given calls (a user's Ctrl-C)."""

    def __init__(self, on_calls):
        super().__init__([])
        self.on_calls = set(on_calls)

    def detect_batch(self, images, classes):
        if len(self.batches) in self.on_calls:
            os.kill(os.getpid(), signal.SIGINT)
        return super().detect_batch(images, classes)


@pytest.mark.parametrize("signals, expected_line", [
    ([2], "ovdet: stopping: finishing queued frames"),   # graceful: queued frames are finished
    ([2, 3], "ovdet: interrupted"),                       # a second Ctrl-C aborts at once
], ids=["once", "twice"])
def test_ctrl_c_in_process(tmp_path, capfd, monkeypatch, signals, expected_line):
    from ovdet.detector import Detector

    stub = _SignalingDetector(signals)
    monkeypatch.setattr(Detector, "from_config", classmethod(lambda cls, cfg, download=True: stub))
    video = write_video(tmp_path / "clip.mp4", moving_crop_frames(60), fps=FPS)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    code = cli([video, "--classes", "cat", "--batch-size", "2", "--queue", "4", "--out", out, "--jsonl", jsonl,
                "--no-progress"])
    err = capfd.readouterr().err
    assert code == 130 and expected_line in err, err
    n = len(jsonl_records(jsonl))
    assert read_video(out)[0] == n  # closed and playable either way
    if len(signals) == 1:
        # stopped reading at the signal; the frames already queued (4) were still processed
        assert 2 * 2 + 2 <= n <= 2 * 2 + 2 + 4 + 2
    else:
        assert n == 2 * 3  # the batch in flight at the second signal is not written
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_frame_folder_with_a_corrupt_frame_exits_1(tmp_path, capfd, monkeypatch):
    import cv2
    from ovdet.detector import Detector

    monkeypatch.setattr(Detector, "from_config", classmethod(lambda cls, cfg, download=True: TemplateDetector([])))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(moving_crop_frames(6)):
        cv2.imwrite(str(frames / f"{i:04d}.jpg"), frame[..., ::-1])
    (frames / "0003.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    jsonl = tmp_path / "out.jsonl"
    code = cli([frames, "--classes", "cat", "--fps", "5", "--jsonl", jsonl, "--out", tmp_path / "o.avi"])
    err = capfd.readouterr().err
    assert code == 1, err  # some input was skipped, and said so
    assert "ovdet: 5 frames" in err and "corrupt 1" in err
    records = jsonl_records(jsonl)
    assert [r["frame"] for r in records] == [0, 1, 2, 4, 5]
    assert [r["time"] for r in records] == [0.0, 0.2, 0.4, 0.8, 1.0]
    assert read_video(tmp_path / "o.avi") == (5, pytest.approx(5.0), (192, 144))
