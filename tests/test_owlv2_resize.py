"""OWLv2's preprocessing with the OpenCV blur equals the stock processor's, and saves as it."""

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, Owlv2ImageProcessor

from ovdet import Detector
from ovdet.backends.owlv2_resize import Owlv2CpuImageProcessor, cpu_fast, gaussian_blur_cv2


def photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    smooth = rng.random((h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    return torch.from_numpy((255 * (0.7 * smooth + 0.3 * rng.random((h, w, 3)))).astype(np.uint8)).permute(2, 0, 1)


@pytest.mark.parametrize("hw", [(900, 1200), (1500, 700), (300, 451), (40, 30)])  # 40 x 30: upsampled, no blur
def test_same_pixels_as_the_stock_processor(hw):
    stock = Owlv2ImageProcessor(size={"height": 240, "width": 240})
    fast = cpu_fast(stock)
    assert type(fast) is Owlv2CpuImageProcessor
    image = photo(*hw)
    want = stock(images=[image], return_tensors="pt")["pixel_values"]
    got = fast(images=[image], return_tensors="pt")["pixel_values"]
    assert got.shape == want.shape == (1, 3, 240, 240)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_blur_equals_torchvision():
    from torchvision.transforms.v2 import functional as tvF

    x = torch.rand(2, 3, 50, 70)
    for size, sigma in (((7, 5), (1.2, 0.7)), ((11, 11), (1.6, 1.6))):
        torch.testing.assert_close(gaussian_blur_cv2(x, size, sigma), tvF.gaussian_blur(x, list(size), list(sigma)),
                                   atol=1e-6, rtol=0)


def test_other_inputs_take_the_stock_resize_and_it_saves_as_the_stock_class(tmp_path):
    fast = cpu_fast(Owlv2ImageProcessor(size={"height": 64, "width": 64}))
    x = torch.rand(1, 3, 200, 200, dtype=torch.float64)  # not float32: the parent's own resize
    stock = Owlv2ImageProcessor(size={"height": 64, "width": 64})
    size = stock.size
    torch.testing.assert_close(fast.resize(x, size), stock.resize(x, size))
    fast.save_pretrained(tmp_path)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is Owlv2ImageProcessor
    assert cpu_fast("not a processor") == "not a processor"


def test_owlv2_detectors_use_it(tiny_owlv2, tiny_owlvit):
    v2 = Detector.from_pretrained(str(tiny_owlv2), device="cpu", cache_text=False).backend.processor.image_processor
    v1 = Detector.from_pretrained(str(tiny_owlvit), device="cpu", cache_text=False).backend.processor.image_processor
    assert type(v2) is Owlv2CpuImageProcessor and type(v1) is not Owlv2CpuImageProcessor
