"""The torch-free preprocessing equals the transformers processors' (and torchvision's
uint8 resize) on non-square images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovdet.geometry import nms
from ovdet.backends.onnx.preprocess import padded_square_pixels, resize_bicubic_aa, square_resize_pixels


@pytest.mark.parametrize("shape", [(100, 150, 128, 128), (300, 451, 768, 768), (97, 53, 64, 64), (31, 500, 224, 224),
                                   (480, 640, 224, 224)])
def test_bicubic_resize_equals_torchvision_uint8(shape, rng):
    import torchvision.transforms.v2.functional as F

    h, w, oh, ow = shape
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    want = F.resize(torch.from_numpy(image).permute(2, 0, 1), [oh, ow], interpolation=F.InterpolationMode.BICUBIC,
                    antialias=True).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(resize_bicubic_aa(image, oh, ow), want)


@pytest.mark.parametrize("kind", ["owlvit", "owlv2", "clip"])
def test_pixels_equal_the_processors(kind, tiny_models, tiny_clip, rng):
    from transformers import AutoProcessor

    folder = tiny_clip if kind == "clip" else tiny_models[kind]
    processor = AutoProcessor.from_pretrained(str(folder)).image_processor  # the stock processor is the reference
    for h, w in ((100, 150), (300, 451), (77, 40)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        tensor = torch.from_numpy(image).permute(2, 0, 1)
        if kind == "clip":  # as ClipModel.preprocess_square: straight to the square input
            want = processor(images=[tensor], size={"height": 64, "width": 64}, do_center_crop=False,
                             return_tensors="pt")["pixel_values"].numpy()
            got = square_resize_pixels([image], 64, processor.image_mean, processor.image_std)
        else:
            want = processor(images=[tensor], return_tensors="pt")["pixel_values"].numpy()
            fn = padded_square_pixels if kind == "owlv2" else square_resize_pixels
            got = fn([image], 128, processor.image_mean, processor.image_std)
        np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_numpy_nms_equals_torchvision(rng):
    from torchvision.ops import batched_nms

    xy = rng.uniform(0, 200, (300, 2)).astype(np.float32)
    boxes = np.hstack([xy, xy + rng.uniform(5, 80, (300, 2)).astype(np.float32)])
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    groups = rng.integers(0, 3, 300)
    for iou in (0.3, 0.5, 0.7):
        want = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), iou).numpy()
        np.testing.assert_array_equal(nms(boxes, scores, iou, groups), want)


def test_numpy_nms_decides_ties_at_the_threshold_as_torchvision():
    """IoU exactly float32(0.3) (sliding windows produce such pairs) is above a 0.3 threshold
    for torchvision, which compares in float64; and group offsets round as its batched_nms."""
    from torchvision.ops import batched_nms

    boxes = np.array([[0, 0, 160, 300], [0, 0, 48, 300], [10, 10, 60, 60], [10, 10, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    groups = np.array([0, 0, 1, 2])
    for iou in (0.3, 0.5):
        want = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), iou).numpy()
        np.testing.assert_array_equal(nms(boxes, scores, iou, groups), want)
    assert nms(boxes, scores, 0.3, groups).tolist() == [0, 2, 3]
