"""A 20000 x 20000 image with masks through the real CLI, in a subprocess, run as users run
such images (in tiles: SAM outlines each tile's objects at its 1024 px input): every detection
segmented (the masker upsamples only where masks can be) and written as JSON within the same
3 GB peak as without masks. Masks are made for the reported detections only, after merging;
the tiny random SAM outlines about its whole tile every time (a 25 MB crop per 5000 px tile)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from conftest import make_tiny_models
from test_huge_images import MEASURE, PEAK_LIMIT_GB, SIDE, detect_args, env, huge_png  # noqa: F401 - a fixture


def test_20000_squared_with_masks_in_bounded_memory(huge_png, tiny_owlv2, tmp_path):  # noqa: F811
    sam = make_tiny_models.make_sam("sam2", tmp_path / "sam2")
    out = tmp_path / "r.json"
    args = detect_args(huge_png, tiny_owlv2, "--masks", sam, "--max-det", "3", "--threshold", "0", "--json", out,
                       "--tile", "5000", "--tile-overlap", "0.05", "--batch-size", "4")
    proc = subprocess.run([sys.executable, "-c", MEASURE, *map(str, args)], capture_output=True, text=True, env=env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_gb = int(proc.stdout.strip().splitlines()[-1]) / 1e6
    assert peak_gb < PEAK_LIMIT_GB, f"peak RSS {peak_gb:.2f} GB"
    result = json.loads(out.read_text())[0]
    dets = result["detections"]
    assert len(dets) == 3 and all(d["mask"]["size"] == [SIDE, SIDE] for d in dets)
    from pycocotools import mask as mask_utils

    areas = [mask_utils.area({"size": [SIDE, SIDE], "counts": d["mask"]["counts"].encode()}) for d in dets]
    assert max(areas) > 0
    boxes = np.asarray([d["box"] for d in dets])
    assert (boxes >= 0).all() and (boxes <= SIDE).all()
