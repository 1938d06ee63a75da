"""Huge images through the real CLI, in subprocesses: bounded memory whole and tiled, the
max_pixels error, Ctrl-C while an image is being read or resized; JPEG draft in the API."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdet import Detector

ROOT = Path(__file__).resolve().parent.parent
SIDE = 20000
PEAK_LIMIT_GB = 3.0

# runs `python -m ovdet ARGS` as its only child and prints that child's peak RSS in kB
MEASURE = ("import resource, subprocess, sys; rc = subprocess.run([sys.executable, '-m', 'ovdet', *sys.argv[1:]]).returncode;"
           " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def write_png(path: Path, width: int, height: int, rows, block: int = 256) -> None:
    """An 8-bit RGB PNG built row by row without holding its pixels (1.2 GB at 20000 x 20000;
    `rows(y)` gives row y's bytes). A run of equal rows is deflated once per `block` rows and
    that piece repeated: each piece starts a fresh raw-deflate stream and ends on a full flush,
    so it refers to nothing before it and any sequence of pieces, closed by an empty final
    block, is one valid deflate stream (seconds of zlib saved for the 20000-row image)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    def deflated(data: bytes) -> bytes:
        comp = zlib.compressobj(1, zlib.DEFLATED, -15)
        return comp.compress(data) + comp.flush(zlib.Z_FULL_FLUSH)

    parts, adler, y = [], 1, 0
    while y < height:
        line = b"\x00" + rows(y)
        run = 1
        while y + run < height and rows(y + run) == line[1:]:
            run += 1
        for _ in range(run):
            adler = zlib.adler32(line, adler)
        whole, rest = divmod(run, block)
        if whole:
            parts += [deflated(line * block)] * whole
        if rest:
            parts.append(deflated(line * rest))
        y += run
    parts.append(zlib.compressobj(1, zlib.DEFLATED, -15).flush())  # the empty final block
    stream = b"\x78\x01" + b"".join(parts) + struct.pack(">I", adler & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", stream) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    """20000 x 20000 grey with a dark blue 6000 x 1000 band."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    grey = bytes([128]) * (SIDE * 3)
    band = bytearray(grey)
    band[3 * 3000 : 3 * 9000] = bytes([30, 60, 200]) * 6000
    band = bytes(band)
    write_png(path, SIDE, SIDE, lambda y: band if 5000 <= y < 6000 else grey)
    return path


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def detect_args(image, model, *extra):
    return ["detect", str(image), "--classes", "road,car", "--model", str(model), "--device", "cpu", *extra]


MODES = {"whole": [], "tiled": ["--tile", "5000", "--tile-overlap", "0.05", "--batch-size", "4"]}


@pytest.fixture(scope="module")
def bounded_runs(huge_png, tiny_owlv2, tmp_path_factory) -> dict:
    """{mode: (finished process, its --json file, its --out folder)}: the measured run of each
    mode in MODES, both started together (each mostly decodes and encodes on one core; each
    wrapper measures only its own child's peak)."""
    started = {}
    for mode, extra in MODES.items():
        folder = tmp_path_factory.mktemp(mode)
        out, drawn = folder / "r.json", folder / "drawn"
        args = detect_args(huge_png, tiny_owlv2, "--json", out, "--out", drawn, *extra)
        started[mode] = (subprocess.Popen([sys.executable, "-c", MEASURE, *args], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env()), out, drawn)
    runs = {}
    try:
        for mode, (proc, out, drawn) in started.items():
            stdout, stderr = proc.communicate(timeout=600)
            runs[mode] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out, drawn)
    finally:
        for proc, _, _ in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return runs


@pytest.mark.parametrize("mode", list(MODES))
def test_20000_squared_runs_in_bounded_memory(bounded_runs, huge_png, mode):
    """Read, detected and drawn (the annotated image written too) within PEAK_LIMIT_GB."""
    proc, out, drawn = bounded_runs[mode]
    assert proc.returncode == 0, proc.stderr
    peak_gb = int(proc.stdout.strip().splitlines()[-1]) / 1e6
    assert peak_gb < PEAK_LIMIT_GB, f"peak RSS {peak_gb:.2f} GB"
    result = json.loads(out.read_text())[0]
    assert (result["width"], result["height"]) == (SIDE, SIDE)
    boxes = np.asarray([d["box"] for d in result["detections"]]).reshape(-1, 4)
    assert len(boxes) and (boxes >= 0).all() and (boxes <= SIDE).all()
    with Image.open(drawn / huge_png.name) as picture:  # the header only
        assert picture.size == (SIDE, SIDE)


def test_above_max_pixels_one_line_exit_2(huge_png, tiny_owlv2):
    proc = subprocess.run([sys.executable, "-m", "ovdet", *detect_args(huge_png, tiny_owlv2, "--max-pixels", "399999999")],
                          capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-pixels 400000000" in lines[0], proc.stderr


def rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the child's memory from /proc (Linux)")
def wait_for(proc, condition, deadline):
    while not condition(rss_gb(proc.pid)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def test_ctrl_c_while_a_huge_image_is_read_exits_130_within_5_s(huge_png, tiny_owlv2):
    """SIGINT while the PNG is decoded: the child (about 0.1 GB before it starts reading) grows
    past 0.9 GB only while decoding (its peak is 4 bytes a pixel, 1.6 GB)."""
    proc = subprocess.Popen([sys.executable, "-m", "ovdet", *detect_args(huge_png, tiny_owlv2, "--json", "-")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        wait_for(proc, lambda gb: gb > 0.9, time.monotonic() + 300)
        assert proc.poll() is None, "finished before it could be interrupted"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert took < 5, f"exit took {took:.1f} s"
    assert "interrupted" in err and "Traceback" not in err


def test_ctrl_c_while_a_huge_image_is_resized_stops_within_a_second():
    """OWLv2's resize of a 20000 x 20000 image (over a second) is a Python loop over bands of
    rows, so a SIGINT stops it between two bands. In process: in a child the resize is too
    short a phase to aim a signal at from outside."""
    import threading

    from ovdet.backends.owlv2_resize import axis_weights, resample

    image = np.full((SIDE, SIDE, 3), 128, np.uint8)
    sigma = (SIDE / 128 - 1) / 2
    ay = ax = axis_weights(SIDE, SIDE, 128, sigma)
    sent = []

    def interrupt():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.1, interrupt)
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        resample(image, ay, ax)
        time.sleep(5)  # the resize finished first: the signal still lands, and the check below fails
    stopped = time.monotonic()
    timer.join()
    assert stopped - sent[0] < 1.0, f"the resize went on {stopped - sent[0]:.2f} s after the signal"
    # it was interrupted, not finished: a whole resize takes longer than that
    started = time.monotonic()
    resample(image, ay, ax)
    assert time.monotonic() - started > stopped - start


def test_jpeg_paths_decode_reduced_and_report_original_pixels(tiny_owlv2, astronaut_path, tmp_path):
    """By default a JPEG path is decoded in full (the pixels every other entry point gets).
    With reduced_decode, the tiny OWLv2 (128 px input) decodes a 2000 x 1500 JPEG at 1/4
    (500 x 375, >= 2 x 128), and its boxes come back in the photo's own pixels."""
    photo = Image.open(astronaut_path).convert("RGB").resize((2000, 1500))
    photo.save(tmp_path / "p.jpg", quality=95)
    exact = Detector.from_pretrained(str(tiny_owlv2), device="cpu", cache_text=False)
    whole = exact.load(tmp_path / "p.jpg")
    assert not whole.reduced and whole.array.shape == (1500, 2000, 3)
    np.testing.assert_array_equal(whole.array, np.asarray(Image.open(tmp_path / "p.jpg")))
    det = Detector.from_pretrained(str(tiny_owlv2), device="cpu", threshold=0.0, nms_iou=1.0, cache_text=False,
                                   reduced_decode=True)
    loaded = det.load(tmp_path / "p.jpg")
    assert loaded.array.shape == (375, 500, 3) and loaded.size == (1500, 2000)
    from_path = det.detect(tmp_path / "p.jpg", ["person"])
    assert from_path.image_size == (1500, 2000)
    assert from_path.xyxy[:, 2].max() > 1000 and (from_path.xyxy[:, 2] <= 2000).all()
    # the model's input from the reduced decode is close to the full decode's
    full = det.backend.preprocess([np.asarray(Image.open(tmp_path / "p.jpg"))])
    reduced = det.backend.preprocess([loaded.array])
    assert (full - reduced).abs().mean() < 0.02
    # tiling needs every pixel: no draft
    assert not Detector.from_pretrained(str(tiny_owlv2), device="cpu", cache_text=False, tile=512,
                                        reduced_decode=True).load(tmp_path / "p.jpg").reduced
