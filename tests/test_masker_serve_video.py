"""Masks where boxes go besides `ovdet detect`: the served API (masks=true, drawn on the page)
and `ovdet video` (masks in the JSONL with their track ids, carried between detector frames)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from conftest import make_tiny_models
from ovdet import Detector
from ovdet.serve.app import STATIC_DIR, ServedModels, create_app
from ovdet.serve.background import serve_in_thread
from ovdet.serve.limits import ServeSettings
from test_video_common import cli, moving_crop_frames, write_video


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory):
    return make_tiny_models.make_sam("sam2", tmp_path_factory.mktemp("sam") / "sam2")


@pytest.fixture(scope="module")
def served(tiny_owlv2, tiny_sam2):
    detector = Detector.from_pretrained(tiny_owlv2, precision="fp32", threshold=0.0, max_detections=5,
                                        masks=str(tiny_sam2))
    app = create_app(lambda: ServedModels(detector), ServeSettings(max_batch=4, batch_wait_ms=50))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(600):  # the model loads in the background
            if client.get("/readyz").status_code == 200:
                break
            import time

            time.sleep(0.1)
        yield client, detector


def test_serve_answers_masks_when_asked(served, chelsea_path):
    client, detector = served
    files = {"image": ("cat.jpg", chelsea_path.read_bytes(), "image/jpeg")}
    plain = client.post("/v1/detect", files=files, data={"classes": "cat,remote"})
    assert plain.status_code == 200 and all("mask" not in d for d in plain.json()["detections"])
    passes = detector.masker.image_passes
    asked = client.post("/v1/detect", files=files, data={"classes": "cat,remote", "masks": "true",
                                                         "mask_format": "polygon"})
    assert asked.status_code == 200, asked.text
    body = asked.json()
    assert detector.masker.image_passes == passes + 1
    expected = detector.detect(chelsea_path, "cat,remote")  # the library, same boxes and masks
    assert [d["box"] for d in body["detections"]] == [[round(v, 2) for v in b] for b in expected.xyxy.tolist()]
    assert [d["mask"] for d in body["detections"]] == expected.masks.to_rle()
    assert all(isinstance(d["polygons"], list) for d in body["detections"])
    assert client.get("/v1/model").json()["masks"] == str(detector.config.masks)
    page = (STATIC_DIR / "app.js").read_text()
    assert 'form.append("masks", "true")' in page and "d.polygons" in page


def test_serve_without_a_masker_refuses_masks(tiny_owlv2, chelsea_path):
    detector = Detector.from_pretrained(tiny_owlv2, precision="fp32")
    app = create_app(lambda: ServedModels(detector), ServeSettings())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(600):
            if client.get("/readyz").status_code == 200:
                break
            import time

            time.sleep(0.1)
        files = {"image": ("cat.jpg", chelsea_path.read_bytes(), "image/jpeg")}
        answer = client.post("/v1/detect", files=files, data={"classes": "cat", "masks": "true"})
    assert answer.status_code == 400 and answer.json()["error"] == "masks_unavailable"


def test_video_jsonl_carries_masks_with_their_tracks(tiny_owlv2, tiny_sam2, tmp_path, capfd):
    from pycocotools import mask as mask_utils

    frames = moving_crop_frames(8)
    video = write_video(tmp_path / "in.mp4", frames, fps=10.0)
    jsonl, out = tmp_path / "f.jsonl", tmp_path / "out.mp4"
    code = cli([video, "--classes", "person,flag", "--model", tiny_owlv2, "--device", "cpu", "--precision", "fp32",
                "--threshold", "0.05", "--max-det", "4", "--track", "--every", "2", "--masks", tiny_sam2,
                "--jsonl", jsonl, "--out", out])
    assert code == 0, capfd.readouterr().err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 8 and out.is_file()
    dets = [d for r in records for d in r["detections"]]
    assert dets and all("mask" in d and "track_id" in d for d in dets)
    h, w = frames[0].shape[:2]
    tracked = {}
    for r in records:
        for d in r["detections"]:
            rle = {"size": d["mask"]["size"], "counts": d["mask"]["counts"].encode()}
            assert d["mask"]["size"] == [h, w]
            if d["track_id"] >= 0:
                tracked.setdefault(d["track_id"], []).append((r["frame"], d["box"], mask_utils.decode(rle)))
    # on a carried frame (odd) a track's mask is the previous one moved by its box's centre shift
    moved = 0
    for sightings in tracked.values():
        for (f0, b0, m0), (f1, b1, m1) in zip(sightings, sightings[1:]):
            if f1 != f0 + 1 or f1 % 2 == 0 or not m0.any():
                continue
            dx = round(((b1[0] + b1[2]) - (b0[0] + b0[2])) / 2)
            dy = round(((b1[1] + b1[3]) - (b0[1] + b0[3])) / 2)
            expected = np.zeros_like(m0)
            ys, xs = np.nonzero(m0)
            ys, xs = ys + dy, xs + dx
            keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            expected[ys[keep], xs[keep]] = 1
            assert np.array_equal(m1, expected)
            moved += 1
    assert moved, "no track was carried over a skipped frame"
