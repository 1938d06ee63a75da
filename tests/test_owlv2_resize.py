"""OWLv2's preprocessing resized first and padded after equals the stock processor."""

import numpy as np
import pytest
import torch
from transformers import Owlv2ImageProcessor, OwlViTImageProcessor

from ovdet import Detector
from ovdet.backends.owlv2_resize import Owlv2Resizer, axis_weights, reduce_to

# max |difference| of the normalised pixel values (which span about -1.8..2.1) from the stock
# processor: the same kernel, reflection and sampling positions, summed in another order
TOLERANCE = 1e-4


def photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    smooth = rng.random((h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    return (255 * (0.7 * smooth + 0.3 * rng.random((h, w, 3)))).astype(np.uint8)


def stock_pixels(processor, image):
    return processor(images=[torch.from_numpy(image).permute(2, 0, 1)], return_tensors="pt")["pixel_values"]


# wide, tall, small, upsampled (no blur), exactly the input size, one pixel over it (a
# 3-tap kernel), and a blur wider than the short side's padding boundary
@pytest.mark.parametrize("hw", [(900, 1200), (1500, 700), (300, 451), (40, 30), (240, 240), (241, 120), (2000, 90)])
def test_same_pixels_as_the_stock_processor(hw):
    stock = Owlv2ImageProcessor(size={"height": 240, "width": 240})
    image = photo(*hw)
    want = stock_pixels(stock, image)
    got = Owlv2Resizer(stock)([image])
    assert got.shape == want.shape == (1, 3, 240, 240)
    assert (got - want).abs().max() < TOLERANCE
    # the padding is the processor's (black after normalisation) and the image lands top-left
    torch.testing.assert_close(got[0, :, -1, -1], want[0, :, -1, -1], atol=1e-6, rtol=0)


def test_a_batch_of_different_sizes_and_read_only_arrays():
    stock = Owlv2ImageProcessor(size={"height": 96, "width": 96})
    images = [photo(300, 200, 1), photo(120, 500, 2)]
    images[1].setflags(write=False)
    got = Owlv2Resizer(stock)(images)
    for g, image in zip(got, images):
        assert (g - stock_pixels(stock, image)[0]).abs().max() < TOLERANCE


def test_axis_weights_are_a_band_that_sums_to_one_inside_the_image():
    aw = axis_weights(length=1000, side=2000, out=100, sigma=(2000 / 100 - 1) / 2)
    assert aw.rows == 51  # outputs past 1000 * 100 / 2000 = 50 (+1 the blur reaches) are padding
    sums = aw.weights.sum(1)
    np.testing.assert_allclose(sums[:45], 1, atol=1e-5)  # away from the padding: a weighted mean
    assert (sums[aw.rows:] == 0).all() and 0 < sums[aw.rows - 1] < 0.5
    assert aw.weights.shape[1] <= 2 * np.ceil(3 * 9.5) + 1 + 20  # the kernel + one bilinear step


def test_supports_only_the_stock_owlv2_pipeline():
    assert Owlv2Resizer.supports(Owlv2ImageProcessor())
    assert not Owlv2Resizer.supports(Owlv2ImageProcessor(do_pad=False))
    assert not Owlv2Resizer.supports(OwlViTImageProcessor())


def test_owlv2_detectors_use_it_and_no_full_resolution_float_copy(tiny_owlv2, tiny_owlvit, monkeypatch):
    v2 = Detector.from_pretrained(str(tiny_owlv2), device="cpu", cache_text=False).backend
    v1 = Detector.from_pretrained(str(tiny_owlvit), device="cpu", cache_text=False).backend
    assert isinstance(v2.resizer, Owlv2Resizer) and v1.resizer is None
    # the largest float tensor made while preprocessing a 3000 x 4000 image is far smaller
    # than the image (the stock processor makes two 12 M x 3 float copies)
    sizes = []
    real_empty = torch.empty

    def tracking_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        sizes.append(t.numel())
        return t

    monkeypatch.setattr(torch, "empty", tracking_empty)
    v2.preprocess([np.zeros((3000, 4000, 3), np.uint8)])
    assert sizes and max(sizes) < 3000 * 4000 * 3 / 2


def test_reduce_to_is_close_to_owlvits_own_resize_of_the_full_image():
    stock = OwlViTImageProcessor(size={"height": 96, "width": 96}, crop_size={"height": 96, "width": 96})
    image = photo(1200, 900)
    small = reduce_to(image, 192, 192)
    assert small.shape == (192, 192, 3) and small.dtype == np.uint8
    assert reduce_to(small, 500, 500) is small  # already small enough: untouched
    diff = (stock_pixels(stock, image) - stock_pixels(stock, small)).abs()
    # 30 % per-pixel noise is where anti-aliasing filters differ most (real photos: 0.004)
    assert diff.mean() < 0.06
