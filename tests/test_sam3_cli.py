"""SAM 3 through the command line (a folder saved by save_pretrained), and the commands that
refuse it in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovdet import Detector
from ovdet.records import detections_from_records

from test_cli import error_line, finish, start_cli


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_detect_json_with_masks_export_and_explain_refuse(tiny_sam3, tmp_path):
    image = tmp_path / "street.png"
    pixels = (np.random.default_rng(1).random((70, 100, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(image)
    flags = ["--device", "cpu", "--precision", "fp32", "--threshold", "0.2"]
    detect = start_cli("detect", image, "--classes", "cat,dog", "--model", tiny_sam3, "--json", "-", *flags,
                       "--example", f"cat={image}:5,5,40,50", "--example", f"cat={image}:50,10,90,60:negative",
                       cwd=tmp_path)
    export = start_cli("export", "--model", tiny_sam3, "--out", tmp_path / "onnx", cwd=tmp_path)
    explain = start_cli("explain", image, "--classes", "cat", "--model", tiny_sam3, cwd=tmp_path)
    done = finish(detect)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)[0]
    dets = detections_from_records(record["detections"], (70, 100), ("cat", "dog"), "stdout")
    api = Detector.from_pretrained(str(tiny_sam3), device="cpu", precision="fp32", threshold=0.2)
    from ovdet import Example

    expected = api.detect(pixels, ["cat", "dog", Example("cat", pixels, (5, 5, 40, 50)),
                                   Example("cat", pixels, (50, 10, 90, 60), negative=True)])
    assert len(dets) == len(expected) > 0
    np.testing.assert_allclose(dets.scores, expected.scores, atol=1e-4)
    np.testing.assert_array_equal(dets.masks.to_dense(), expected.masks.to_dense())
    failed = finish(export)
    assert failed.returncode == 2 and "cannot export backend 'sam3'" in error_line(failed)
    failed = finish(explain)
    assert failed.returncode == 2 and "explain needs a CLIP ViT" in error_line(failed)
