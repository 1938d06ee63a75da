"""The CUDA path against the CPU fp32 reference (run by `python tools/gpu_check.py`).

Every test here is marked `cuda` and skips, with that reason, only where torch sees no CUDA
device. `OVDET_CUDA_TEST_DEVICE=cpu` runs the same comparisons CPU against CPU (a dry run of
the test code on machines without a GPU; the tolerances then hold trivially).

Tolerances, GPU fp32 vs CPU fp32: cuDNN runs fp32 convolutions in TF32 by default on Ampere
and later GPUs (10-bit mantissa, ~1e-3 relative), which reaches OWL's patch embedding and
every YOLO convolution; scores within 5e-3 and boxes within 0.5 px (OWL, CLIP) or IoU 0.99
(YOLO, ~60 convolutions deep) leave room for that and nothing more. GPU half precision vs
CPU fp32: the bounds of the CPU bf16 guards (test_owl, test_yolo), which bf16 and fp16
(3 more mantissa bits) both meet.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from ovdet import Detector
from yolo_models import save_random, save_unit_world  # tests/yolo_models.py

DEVICE = os.environ.get("OVDET_CUDA_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device"),
]
CLASSES = ["cat", "remote control", "blanket"]
IMGSZ = 320


@pytest.fixture(scope="module")
def chelsea(chelsea_path) -> np.ndarray:
    return np.asarray(Image.open(chelsea_path).convert("RGB"))


def compare(fast, ref, score_atol: float, px_atol: float, n: int = 5) -> None:
    """Same top-n classes; scores and boxes within the bounds (see the module docstring)."""
    assert len(ref) >= n and len(fast) >= n
    assert fast.class_ids[:n].tolist() == ref.class_ids[:n].tolist()
    np.testing.assert_allclose(fast.scores[:n], ref.scores[:n], atol=score_atol)
    np.testing.assert_allclose(fast.xyxy[:n], ref.xyxy[:n], atol=px_atol)


@pytest.mark.parametrize("model", ["tiny_owlv2", "tiny_owlvit"])
def test_owl_on_gpu_matches_cpu_fp32(model, request, chelsea):
    folder = str(request.getfixturevalue(model))
    kw = dict(threshold=0.0, nms_iou=0.5, max_detections=10)
    ref = Detector.from_pretrained(folder, device="cpu", precision="fp32", **kw).detect(chelsea, CLASSES)
    gpu32 = Detector.from_pretrained(folder, device=DEVICE, precision="fp32", **kw)
    assert gpu32.backend.device.type == torch.device(DEVICE).type
    compare(gpu32.detect(chelsea, CLASSES), ref, score_atol=5e-3, px_atol=0.5)
    half = Detector.from_pretrained(folder, device=DEVICE, precision="auto", **kw)  # bf16 (fp16 on old GPUs)
    fast = half.detect(chelsea, CLASSES)
    assert fast.class_ids[:5].tolist() == ref.class_ids[:5].tolist()
    assert np.abs(fast.scores[:5] - ref.scores[:5]).max() <= 0.02
    assert np.abs(fast.xyxy[:5] - ref.xyxy[:5]).max() <= 1.5


def test_clip_regions_on_gpu_match_cpu_fp32(tiny_clip, chelsea):
    boxes = np.array([[0, 0, 200, 150], [100, 50, 400, 300], [250, 0, 451, 120], [30, 200, 180, 300]], np.float32)
    kw = dict(proposer="boxes", threshold=0.0, nms_iou=1.0, max_detections=100, templates="{}", precision="fp32")
    ref = Detector.from_pretrained(str(tiny_clip), device="cpu", **kw).detect(chelsea, CLASSES, boxes=boxes)
    gpu = Detector.from_pretrained(str(tiny_clip), device=DEVICE, **kw).detect(chelsea, CLASSES, boxes=boxes)
    assert len(gpu) == len(ref) > 0
    order = np.lexsort((ref.class_ids, ref.xyxy[:, 0], ref.xyxy[:, 1]))
    gorder = np.lexsort((gpu.class_ids, gpu.xyxy[:, 0], gpu.xyxy[:, 1]))
    np.testing.assert_array_equal(gpu.class_ids[gorder], ref.class_ids[order])
    np.testing.assert_allclose(gpu.xyxy[gorder], ref.xyxy[order], atol=1e-4)  # given boxes come back as given
    np.testing.assert_allclose(gpu.scores[gorder], ref.scores[order], atol=5e-3)


@pytest.fixture(scope="module")
def world_unit_pt(chelsea, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("yolo")
    world = save_random("world", "yolov8s-worldv2.yaml", folder / "world.pt")
    return save_unit_world(world, chelsea, IMGSZ, folder / "world-unit.pt")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_yolo_world_on_gpu_matches_cpu_fp32(world_unit_pt, chelsea, dtype):
    from ovdet.backends.yolo import YoloRunner, load_yolo_model

    device = torch.device(DEVICE)
    ref = YoloRunner(load_yolo_model(world_unit_pt, torch.device("cpu")), torch.device("cpu"), IMGSZ)
    gpu = YoloRunner(load_yolo_model(world_unit_pt, device), device, IMGSZ, dtype)
    if device.type == "cuda":
        assert gpu.path == ("fp32" if dtype == torch.float32 else "fp16")
        assert next(gpu.model.parameters()).dtype == dtype
    a = ref.run([chelsea], 0.25, 0.7, False, 100)[0]
    b = gpu.run([chelsea], 0.25, 0.7, False, 100)[0].cpu()
    top = a[:10]
    best = (box_iou(top[:, :4], b[:, :4]) * (top[:, 5:6] == b[None, :, 5])).max(dim=1)
    matched = b[best.indices]
    if dtype == torch.float32:
        assert (best.values >= 0.99).all(), best.values
        assert (matched[:, 4] - top[:, 4]).abs().max() <= 5e-3
    else:
        assert best.values.min() >= 0.75 and best.values.median() >= 0.95, best.values
        assert (matched[:, 4] - top[:, 4]).abs().max() <= 0.05


@pytest.mark.parametrize("model", ["tiny_owlv2", "tiny_owlvit"])
def test_batched_resize_runs_on_the_device(model, request, chelsea):
    """Several photos of different sizes resized and normalised in one call, on the device,
    equal to the CPU's pixel values (resampling kernels differ by device: within 1e-2, about
    0.25 % of the normalised range)."""
    folder = str(request.getfixturevalue(model))
    photos = [chelsea, np.ascontiguousarray(chelsea[:200, 50:]), np.ascontiguousarray(chelsea[::-1])]
    cpu = Detector.from_pretrained(folder, device="cpu", precision="fp32").backend.preprocess(photos)
    on_device = Detector.from_pretrained(folder, device=DEVICE, precision="fp32").backend.preprocess(photos)
    assert on_device.device.type == torch.device(DEVICE).type
    assert on_device.shape == cpu.shape and on_device.shape[0] == len(photos)
    torch.testing.assert_close(on_device.cpu().float(), cpu.float(), atol=1e-2, rtol=1e-3)
