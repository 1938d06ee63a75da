"""`ovdet` end to end in subprocesses, as a user runs it."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_process import finish, start


def start_cli(*args, cwd=None, env_extra=None) -> subprocess.Popen:
    """`ovdet ARGS` started and left running (`cli_process`): start independent runs together,
    then `finish` each."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OVDET_WEIGHTS": "", **(env_extra or {})}
    env.pop("OVDET_WEIGHTS")
    return start(["-m", "ovdet", *args], cwd=cwd, env=env)


def run_cli(*args, cwd=None, env_extra=None):
    return finish(start_cli(*args, cwd=cwd, env_extra=env_extra))


def error_line(proc):
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory, chelsea_path, astronaut_path):
    d = tmp_path_factory.mktemp("imgs")
    shutil.copy(chelsea_path, d / "chelsea.jpg")
    shutil.copy(astronaut_path, d / "astronaut.jpg")
    Image.open(chelsea_path).convert("L").save(d / "gray.png")
    return d


def test_detect_json_schema_and_annotated_images(tiny_owlv2, images, tmp_path):
    out_dir, json_path = tmp_path / "annotated", tmp_path / "res.json"
    proc = run_cli("detect", images, "--classes", "cat,dog", "--model", tiny_owlv2,
                   "--threshold", "0.3", "--out", out_dir, "--json", json_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(json_path.read_text())
    assert [r["image"] for r in results] == [str(images / n) for n in ("astronaut.jpg", "chelsea.jpg", "gray.png")]
    for r in results:
        assert set(r) == {"image", "width", "height", "detections"}
        w, h = Image.open(r["image"]).size
        assert (r["width"], r["height"]) == (w, h)
        for d in r["detections"]:
            assert set(d) == {"box", "score", "class_id", "class_name", "raw_score"}
            assert abs(1 / (1 + math.exp(-d["raw_score"])) - d["score"]) < 1e-4  # OWL: sigmoid(logit)
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert 0.3 < d["score"] <= 1 and d["class_name"] == ["cat", "dog"][d["class_id"]]
    assert sum(len(r["detections"]) for r in results) > 0
    for name in ("astronaut.jpg", "chelsea.jpg", "gray.png"):
        drawn = np.asarray(Image.open(out_dir / name))
        original = np.asarray(Image.open(images / name).convert("RGB"))
        assert drawn.shape == original.shape
    # boxes were drawn on an image that has detections
    chelsea = next(r for r in results if r["image"].endswith("chelsea.jpg"))
    assert chelsea["detections"]
    assert np.abs(np.asarray(Image.open(out_dir / "chelsea.jpg"), float) - np.asarray(Image.open(images / "chelsea.jpg"), float)).mean() > 1


def test_json_to_stdout_and_glob(tiny_owlvit, images):
    proc = run_cli("detect", images / "*.jpg", "--classes", "cat", "--model", tiny_owlvit, "--json", "-", "--max-det", "2")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == 2 and all(len(r["detections"]) <= 2 for r in results)


def test_human_output_without_json(tiny_owlv2, chelsea_path, tmp_path):
    proc = run_cli("detect", chelsea_path, "--classes", "cat", "--model", tiny_owlv2, "--threshold", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{chelsea_path}: ") and " cat " in proc.stdout


def test_unreadable_image_among_several_is_skipped_with_exit_1(tiny_owlv2, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    json_path = tmp_path / "r.json"
    proc = run_cli("detect", images / "chelsea.jpg", bad, tmp_path / "missing.png", "--classes", "cat",
                   "--model", tiny_owlv2, "--json", json_path)
    assert proc.returncode == 1
    assert f"skipping {bad}" in proc.stderr and "missing.png" in proc.stderr
    assert [r["image"] for r in json.loads(json_path.read_text())] == [str(images / "chelsea.jpg")]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["detect", "NOPE.jpg", "--classes", "cat"], "image not found: NOPE.jpg"),
        (["detect", "BROKEN", "--classes", "cat"], "cannot read image"),
        (["detect", "IMG", "--classes", ""], "empty vocabulary"),
        (["detect", "IMG", "--classes", "cat,dog,cat"], "duplicate class name"),
        (["detect", "IMG", "--classes", "cat", "--model", "owlv2-b61"], "unknown preset 'owlv2-b61'"),
        (["detect", "IMG", "--classes", "cat", "--model", "CONFIG"], "cannot read config"),
        (["detect", "IMG", "--classes", "cat", "--model", "owlvit-b32"], "no checkpoint for owlvit-b32"),
        (["detect", "IMG", "--classes", "cat", "--threshold", "abc"], "invalid float value"),
        (["detect", "IMG"], "--classes"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, needle, tmp_path, chelsea_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    config = tmp_path / "bad.yaml"
    config.write_text("backend: [owl\n")
    subs = {"BROKEN": broken, "IMG": chelsea_path, "CONFIG": config}
    proc = run_cli(*[subs.get(a, a) for a in args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert needle in error_line(proc)


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli("detect", "NOPE.jpg", "--classes", "cat", "--debug", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "ImageReadError" in proc.stderr


def test_missing_weights_line_is_short_and_debug_lists_where_ovdet_looked(tmp_path, chelsea_path):
    proc = run_cli("detect", chelsea_path, "--classes", "cat", "--model", "owlvit-b32", cwd=tmp_path)
    line = error_line(proc)
    assert proc.returncode == 2 and len(line) < 200, line
    assert line.startswith("ovdet: error: run `ovdet weights download owlvit-b32`") and "--debug" in line
    debug = run_cli("detect", chelsea_path, "--classes", "cat", "--model", "owlvit-b32", "--debug", cwd=tmp_path)
    assert debug.returncode == 2 and "ovdet looked in:" in debug.stderr
    assert str(tmp_path / "weights" / "owlvit-b32") in debug.stderr and "$OVDET_WEIGHTS (unset)" in debug.stderr


def test_a_bad_flag_value_does_not_blame_a_preset(tmp_path, chelsea_path, tiny_owlv2):
    proc = run_cli("detect", chelsea_path, "--classes", "cat", "--model", tiny_owlv2, "--threshold", "2", cwd=tmp_path)
    line = error_line(proc)
    assert proc.returncode == 2 and "threshold must be in [0, 1], got 2" in line and "preset" not in line


def test_weights_list_and_offline_download(tmp_path):
    listing = run_cli("weights", "list", cwd=tmp_path)
    assert listing.returncode == 0
    for preset in ("owlv2-b16", "owlv2-l14", "owlvit-b32", "owlvit-b16"):
        assert preset in listing.stdout
    composite = next(l for l in listing.stdout.splitlines() if l.startswith("clip-b32-owlv2-proposals "))
    assert "no: model, proposer" in composite
    proc = run_cli("weights", "download", "owlv2-b16", cwd=tmp_path)
    assert proc.returncode == 2 and "HF_HUB_OFFLINE" in error_line(proc)
    proc = run_cli("weights", "download", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown preset" in error_line(proc)


def test_classify_end_to_end(tiny_clip, images, tmp_path):
    json_path = tmp_path / "c.json"
    proc, printed = map(finish, (  # run together
        start_cli("classify", images, "--classes", "cat,astronaut,rocket", "--model", tiny_clip,
                  "--top-k", "2", "--json", json_path),
        start_cli("classify", images / "chelsea.jpg", "--classes", "cat,dog", "--model", tiny_clip)))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(json_path.read_text())
    assert len(results) == 3
    for r in results:
        probs = r["probabilities"]
        assert set(probs) == {"cat", "astronaut", "rocket"}
        assert abs(sum(probs.values()) - 1) < 1e-4 and all(0 <= p <= 1 for p in probs.values())
        assert len(r["top"]) == 2 and r["top"][0]["probability"] >= r["top"][1]["probability"]
        assert r["top"][0]["class_name"] == max(probs, key=probs.get)
    assert printed.returncode == 0 and printed.stdout.startswith(f"{images / 'chelsea.jpg'}: ")


def test_detect_given_boxes_and_vocabulary_file(tiny_clip, images, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"chelsea.jpg": [[10, 10, 200, 200], [100, 50, 451, 300]]}))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("# my classes\ncat\nremote control\n\n")
    json_path = tmp_path / "d.json"
    proc = run_cli("detect", images / "chelsea.jpg", "--classes-from", vocab, "--model", tiny_clip,
                   "--boxes", boxes, "--threshold", "0", "--nms-iou", "1", "--json", json_path)
    assert proc.returncode == 0, proc.stderr
    dets = json.loads(json_path.read_text())[0]["detections"]
    assert sorted(d["box"] for d in dets) == [[10, 10, 200, 200], [100, 50, 451, 300]]
    assert {d["class_name"] for d in dets} <= {"cat", "remote control"}


def test_vocabulary_from_coco_annotations(shared_data, tiny_owlv2, images, tmp_path):
    ann = shared_data / "coco-mini-val" / "instances_val2017.json"
    proc = run_cli("detect", images / "chelsea.jpg", "--classes-from", ann, "--model", tiny_owlv2,
                   "--threshold", "0", "--max-det", "300", "--nms-iou", "1", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    names = {d["class_name"] for d in json.loads(proc.stdout)[0]["detections"]}
    coco = {c["name"] for c in json.loads(ann.read_text())["categories"]}
    assert names <= coco and len(names) > 5


@pytest.mark.parametrize(
    "args, needle",
    [
        (["classify", "IMG", "--classes", ""], "empty vocabulary"),
        (["classify", "BROKEN", "--classes", "cat"], "cannot read image"),
        (["detect", "IMG", "--classes", "cat", "--boxes", "BADBOXES"], "x2 <= x1"),
        (["detect", "IMG", "--classes", "cat", "--boxes", "NOTJSON"], "cannot read boxes file"),
        (["detect", "IMG", "--classes", "cat", "--boxes", "OTHERIMAGE"], "no entry for"),
        (["detect", "IMG", "--classes-from", "NOVOCAB"], "cannot read vocabulary file"),
    ],
)
def test_classify_and_boxes_user_errors(args, needle, tmp_path, chelsea_path, tiny_clip):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    (tmp_path / "bad.json").write_text(json.dumps({"chelsea.jpg": [[10, 10, 5, 20]]}))
    (tmp_path / "not.json").write_text("{[")
    (tmp_path / "other.json").write_text(json.dumps({"x.jpg": [[1, 1, 5, 5]]}))
    subs = {"BROKEN": broken, "IMG": chelsea_path, "BADBOXES": tmp_path / "bad.json", "NOTJSON": tmp_path / "not.json",
            "OTHERIMAGE": tmp_path / "other.json", "NOVOCAB": tmp_path / "missing.txt"}
    proc = run_cli(*[subs.get(a, a) for a in args], "--model", tiny_clip, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert needle in error_line(proc)


def test_interrupted_detect_keeps_finished_images(tiny_owlv2, images, tmp_path, monkeypatch, capsys):
    """Ctrl-C after the first batch: exit 130 and the JSON holds the finished images."""
    from ovdet import cli
    from ovdet.detector import Detector

    real = Detector.detect_batch
    calls = {"n": 0}

    def interrupt_second_batch(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Detector, "detect_batch", interrupt_second_batch)
    json_path = tmp_path / "partial.json"
    code = cli.main(["detect", str(images), "--classes", "cat", "--model", str(tiny_owlv2), "--batch-size", "1",
                     "--json", str(json_path)])
    assert code == 130
    assert [r["image"] for r in json.loads(json_path.read_text())] == [str(images / "astronaut.jpg")]
    err = capsys.readouterr().err
    assert err.count("ovdet: interrupted") == 1, err  # once, saying where the finished work is
    assert f"ovdet: interrupted; 1 finished image(s) written to {json_path}" in err


def test_cli_starts_without_importing_torch():
    """Argument and vocabulary errors must not wait seconds for torch/transformers to import."""
    code = "import sys, ovdet, ovdet.cli.app; ovdet.cli.app.build_parser(); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
