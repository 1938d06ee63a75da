"""What SOURCE names, and the one-line errors (exit 2) for sources that cannot be used."""

from __future__ import annotations

import pytest

from ovdet.video.errors import SourceError
from ovdet.video.sources import FILE, FRAMES, STREAM, WEBCAM, parse_source, redact_url
from test_video_common import cli, moving_crop_frames, write_video


def test_parse_kinds(tmp_path):
    video = write_video(tmp_path / "clip.mp4", moving_crop_frames(3), fps=10)
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("b.png", "a.jpg", "notes.txt"):
        (frames / name).write_bytes(b"x")
    assert parse_source("0") == parse_source(0) == parse_source(" 0 ")
    assert parse_source("2").kind == WEBCAM and parse_source("2").target == 2
    assert parse_source(str(video)).kind == FILE
    assert parse_source("rtsp://cam.local:554/stream1").kind == STREAM
    assert parse_source("HTTPS://example.org/live.m3u8").kind == STREAM
    folder = parse_source(str(frames))
    assert folder.kind == FRAMES and [p.rsplit("/", 1)[1] for p in folder.frames] == ["a.jpg", "b.png"]
    pattern = parse_source(str(frames / "*.png"))
    assert pattern.kind == FRAMES and len(pattern.frames) == 1


def test_url_passwords_never_shown():
    src = parse_source("rtsp://admin:hunter2@10.0.0.9:554/live")
    assert "hunter2" not in str(src) and str(src) == "rtsp://admin:***@10.0.0.9:554/live"
    assert redact_url("http://example.org/a") == "http://example.org/a"
    with pytest.raises(SourceError) as err:
        parse_source("ftp://user:hunter2@host/video.mp4")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("-1", "webcam index must be 0 or more"),
    ("ftp://127.0.0.1/video.mp4", "unsupported URL scheme 'ftp'"),
    ("rtsp:///nohost", "URL has no host"),
    ("no/such/video.mp4", "video not found"),
])
def test_parse_errors(text, message):
    with pytest.raises(SourceError, match=message):
        parse_source(text)


def test_empty_folder_and_glob(tmp_path):
    with pytest.raises(SourceError, match="no image frames in folder"):
        parse_source(str(tmp_path))
    with pytest.raises(SourceError, match="no image frames match"):
        parse_source(str(tmp_path / "*.png"))


def _one_error_line(capfd) -> str:
    # capfd: FFmpeg and OpenCV write to file descriptor 2 directly, not through sys.stderr
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make_source, expected", [
    (lambda d: _write(d / "broken.mp4", b"\x00\x00\x00\x18ftypmp42 not really a video" * 50),
     "cannot open video {d}/broken.mp4: not a video OpenCV can decode"),
    (lambda d: _write(d / "empty.avi", b""),
     "cannot open video {d}/empty.avi"),
    (lambda d: "57", "cannot open webcam 57: no camera with that index is available"),
    (lambda d: "ftp://127.0.0.1/cam.mp4", "unsupported URL scheme 'ftp' in ftp://127.0.0.1/cam.mp4"),
    (lambda d: "udp://127.0.0.1:1234", "unsupported URL scheme 'udp'"),
    (lambda d: d / "missing.mp4", "video not found: {d}/missing.mp4"),
], ids=["garbage-file", "empty-file", "bad-webcam", "ftp-scheme", "udp-scheme", "missing-file"])
def test_cli_source_errors_are_one_line_exit_2(tmp_path, capfd, make_source, expected):
    source = make_source(tmp_path)
    # no model is loaded: sources are checked first (the default preset's weights aren't here)
    code = cli([source, "--classes", "cat", "--jsonl", tmp_path / "out.jsonl", "--no-progress"])
    line = _one_error_line(capfd)
    assert code == 2
    assert line.startswith("ovdet: error: ") and expected.format(d=tmp_path) in line, line


def test_cli_argument_errors(tmp_path, capfd):
    video = write_video(tmp_path / "clip.mp4", moving_crop_frames(3), fps=10)
    for argv, expected in [
        ([video, "--classes", "cat", "--every", "0"], "--every: must be 1 or more"),
        ([video, "--classes", "cat", "--smooth", "5"], "--smooth averages classes over tracks: add --track"),
        ([video, "--classes", "cat", "--out", tmp_path / "out.gif"], "use one of .avi, .m4v, .mkv, .mov, .mp4"),
        ([video, "--classes", "cat,,dog"], "class name #2 is empty"),
    ]:
        assert cli(argv) == 2
        assert expected in _one_error_line(capfd)
