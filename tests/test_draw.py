"""Drawing and writing annotated images: in place where the caller allows it, the same
pixels either way, written atomically in the format the suffix names."""

import numpy as np
import pytest
from PIL import Image

from ovdet.draw import annotate, draw_bgr, save_annotated, save_image
from ovdet.structures import Detections


def scene():
    y, x = np.mgrid[0:90, 0:160]  # smooth, so that JPEG keeps it close
    image = np.stack([x * 255 // 159, y * 255 // 89, (x + y) * 255 // 248], -1).astype(np.uint8)
    dets = Detections(xyxy=[[10, 20, 80, 70], [90, 5, 150, 60]], scores=[0.9, 0.4], class_ids=[0, 1],
                      class_names=("cat", "dog"), image_size=(90, 160))
    return image, dets


def test_in_place_draws_in_the_callers_memory_and_equals_the_copy():
    image, dets = scene()
    expected = draw_bgr(image, dets)
    assert not np.shares_memory(expected, image)
    own = image.copy()
    drawn = draw_bgr(own, dets, in_place=True)
    assert np.shares_memory(drawn, own) and np.array_equal(drawn, expected)
    # memory numpy does not own (ovdet.io decodes huge images into an anonymous mmap)
    import mmap

    memory = mmap.mmap(-1, image.nbytes)
    mapped = np.frombuffer(memory, np.uint8).reshape(image.shape)
    mapped[:] = image
    drawn = draw_bgr(mapped, dets, in_place=True)
    assert np.shares_memory(drawn, mapped) and np.array_equal(drawn, expected)
    assert np.array_equal(annotate(image, dets), expected[..., ::-1])


@pytest.mark.parametrize("make", [lambda a: a[:, ::-1].copy()[:, ::-1], lambda a: _read_only(a)],
                         ids=["not contiguous", "read-only"])
def test_in_place_falls_back_to_a_copy_where_it_cannot(make):
    image, dets = scene()
    arg = make(image)
    before = arg.copy()
    drawn = draw_bgr(arg, dets, in_place=True)
    assert np.array_equal(arg, before) and np.array_equal(drawn, draw_bgr(image, dets))


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def test_save_annotated_png_is_exact_and_jpeg_close(tmp_path):
    image, dets = scene()
    expected_rgb = annotate(image, dets)
    save_annotated(image.copy(), dets, tmp_path / "a.png", in_place=True)
    save_annotated(image, dets, tmp_path / "a.JPG")
    save_image(image, tmp_path / "plain.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), expected_rgb)
    with Image.open(tmp_path / "a.JPG") as jpeg:
        assert jpeg.format == "JPEG"
        assert np.abs(np.asarray(jpeg).astype(int) - expected_rgb).mean() < 8
    assert np.array_equal(np.asarray(Image.open(tmp_path / "plain.png")), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.JPG", "a.png", "plain.png"]  # no temporaries


def _drawn_extent(drawn: np.ndarray, window: tuple[int, int, int, int]) -> tuple[int, int]:
    """(height, width) of the drawn (non-black) pixels inside window = (y0, y1, x0, x1)."""
    y0, y1, x0, x1 = window
    rows, cols = np.nonzero(drawn[y0:y1, x0:x1].any(-1))
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("supervision", [True, False], ids=["supervision", "opencv only"])
def test_labels_stay_proportionate_to_small_boxes_on_a_big_image(monkeypatch, supervision):
    """A 2299x2472 aerial photo with 30 px boxes: each label is at most about the box's own
    height (it was ~50 px tall and hid the boxes), lines stay thin; big boxes get bigger labels.
    Without supervision (the torch-free install) OpenCV draws them alike."""
    import sys

    if not supervision:
        monkeypatch.setitem(sys.modules, "supervision", None)
    image = np.zeros((2472, 2299, 3), np.uint8)
    boxes = [[x, y, x + 30, y + 30] for x in range(400, 2000, 400) for y in range(400, 2200, 400)]
    dets = Detections(xyxy=boxes, scores=[0.5] * len(boxes), class_ids=[0] * len(boxes),
                      class_names=("car",), image_size=(2472, 2299))
    drawn = draw_bgr(image, dets)
    height, width = _drawn_extent(drawn, (300, 440, 390, 600))  # the box at (400, 400) and its label
    label_height = height - 30
    assert 8 <= label_height <= 30, label_height
    assert drawn[415, 400:404].any(-1).sum() <= 2  # a line 1-2 px wide
    big = Detections(xyxy=[[400, 600, 1400, 1600]], scores=[0.5], class_ids=[0], class_names=("car",),
                     image_size=(2472, 2299))
    big_height, _ = _drawn_extent(draw_bgr(image, big), (0, 1700, 300, 1500))
    assert 50 <= big_height - 1000 <= 130  # a 1000 px box keeps a readable, larger label
