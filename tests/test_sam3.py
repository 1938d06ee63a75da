"""SAM 3 as a detector (ovdet.backends.sam3): a tiny random Sam3Model saved and loaded back
through `Detector.from_pretrained`, against transformers' Sam3Model called once per class and
`post_process_instance_segmentation`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovdet import Detector, Example
from ovdet.errors import ExemplarError

H, W = 60, 90
EXACT = dict(device="cpu", precision="fp32", threshold=0.0, nms_iou=1.0, class_agnostic_nms=False,
             max_detections=100000)


@pytest.fixture(scope="module")
def reference(tiny_sam3):
    from transformers import Sam3Model, Sam3Processor

    return Sam3Model.from_pretrained(str(tiny_sam3)).eval(), Sam3Processor.from_pretrained(str(tiny_sam3))


@pytest.fixture(scope="module")
def detector(tiny_sam3):
    return Detector.from_pretrained(str(tiny_sam3), **EXACT)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [(rng.random((H, W, 3)) * 255).astype(np.uint8), (rng.random((80, 50, 3)) * 255).astype(np.uint8)]


def per_class(reference, image, prompts, boxes=None, labels=None):
    """transformers, one call per prompt: [(score, prompt index, xyxy clipped, (H, W) mask)]."""
    model, processor = reference
    h, w = image.shape[:2]
    found = []
    for c, text in enumerate(prompts):
        extra = {} if boxes is None else {"input_boxes": [boxes], "input_boxes_labels": [labels]}
        inputs = processor(images=image, text=text, return_tensors="pt", **extra)
        with torch.no_grad():
            out = model(**inputs)
        res = processor.post_process_instance_segmentation(out, threshold=0.0, target_sizes=[(h, w)])[0]
        for s, b, m in zip(res["scores"], res["boxes"], res["masks"]):
            found.append((float(s), c, np.clip(b.numpy(), 0, [w, h, w, h]), m.numpy().astype(bool)))
    return sorted(found, key=lambda f: -f[0])


def assert_same(dets, expected, classes=None):
    assert len(dets) == len(expected)
    np.testing.assert_allclose(dets.scores, [e[0] for e in expected], atol=1e-5)
    ids = [e[1] for e in expected] if classes is None else [classes[e[1]] for e in expected]
    assert dets.class_ids.tolist() == ids
    np.testing.assert_allclose(dets.xyxy, np.stack([e[2] for e in expected]), atol=1e-3)
    dense = dets.masks.to_dense()
    assert dense.any()
    for i, e in enumerate(expected):
        np.testing.assert_array_equal(dense[i], e[3])


def test_detections_scores_and_masks_equal_per_class_transformers(detector, reference, images):
    classes = ["cat", "dog", "traffic light"]
    dets = detector.detect_batch(images, classes)  # both images in one vision pass
    for image, d in zip(images, dets):
        assert d.image_size == image.shape[:2]
        assert_same(d, per_class(reference, image, classes))


def test_one_vision_pass_per_image_and_one_text_pass_per_new_class(tiny_sam3, images, monkeypatch):
    det = Detector.from_pretrained(str(tiny_sam3), **EXACT)
    model = det.backend.model
    calls = {"vision": 0, "text": []}
    vision, text = model.get_vision_features, model.get_text_features

    def count_vision(**kw):
        calls["vision"] += 1
        return vision(**kw)

    def count_text(**kw):
        calls["text"].append(kw["input_ids"].shape[0])
        return text(**kw)

    monkeypatch.setattr(model, "get_vision_features", count_vision)
    monkeypatch.setattr(model, "get_text_features", count_text)
    features = det.encode(images[:1])
    first = det.detect_encoded(features, ["cat", "dog"])
    again = det.detect_encoded(features, ["cat", "dog", "bird"])
    assert calls == {"vision": 1, "text": [2, 1]}  # "bird" alone is new
    direct = det.detect_batch(images[:1], ["cat", "dog", "bird"])[0]  # one more image pass
    assert calls["vision"] == 2 and calls["text"] == [2, 1]
    np.testing.assert_array_equal(again[0].scores, direct.scores)
    np.testing.assert_array_equal(first[0].xyxy, again[0][again[0].class_ids < 2].xyxy)


def test_box_examples_equal_transformers_input_boxes(detector, reference, images):
    image = images[0]
    pos, neg = (10.0, 5.0, 50.0, 40.0), (60.0, 20.0, 88.0, 58.0)
    classes = ["cat", Example("cat", image, pos), Example("cat", image, neg, negative=True), "dog"]
    dets = detector.detect(image, classes)
    assert_same(dets[dets.class_ids == 0], per_class(reference, image, ["cat"], [list(pos), list(neg)], [1, 0]))
    dogs = dets[dets.class_ids == 1]
    assert_same(dogs, [(s, 1, b, m) for s, _, b, m in per_class(reference, image, ["dog"])])
    # a class shown only by a box gets Sam3Processor's "visual" text
    shown = detector.detect(image, [Example("thing", image, pos)])
    assert_same(shown, per_class(reference, image, ["visual"], [list(pos)], [1]))


def test_examples_from_another_image_are_refused(detector, images):
    with pytest.raises(ExemplarError, match="not the image searched"):
        detector.detect(images[0], ["cat", Example("dog", images[1], (1, 1, 20, 20))])
    with pytest.raises(ExemplarError, match="only negative examples"):
        detector.detect(images[0], [Example("dog", images[0], (1, 1, 20, 20), negative=True)])


def test_templates_are_separate_prompts_of_one_class(tiny_sam3, reference, images):
    det = Detector.from_pretrained(str(tiny_sam3), **{**EXACT, "templates": "{}"})
    det.templates = ("{}", "a {}")  # two phrasings: each its own prompt, all candidates for the class
    det.class_table.text.templates = det.templates
    dets = det.detect(images[0], ["cat"])
    expected = per_class(reference, images[0], ["cat", "a cat"])
    assert_same(dets, [(s, 0, b, m) for s, _, b, m in expected])


def test_negative_prompt_drops_the_class_candidates_it_matches_better():
    from ovdet.backends.sam3 import Sam3Backend
    from ovdet.scoring import drop_negatives

    boxes = torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 11.0], [50, 50, 60, 60]])
    column = torch.tensor([0, 0, 1, 1])  # two candidates of class 0, two of negative prompt 1
    scores = torch.zeros(4, 2)
    scores[torch.arange(4), column] = torch.tensor([0.6, 0.8, 0.9, 0.1])
    Sam3Backend.fill_negatives(scores, boxes, column, classes=1)
    assert scores[:2, 1].tolist() == pytest.approx([0.9, 0.1])  # best overlapping negative candidate
    kept = drop_negatives(scores, 1)[:2, 0]
    assert kept.tolist() == pytest.approx([0.0, 0.8])  # the first is the negative's object


def test_tiled_masks_are_the_tiles_masks_in_image_pixels(tiny_sam3):
    from ovdet.tiling import tile_windows

    det = Detector.from_pretrained(str(tiny_sam3), device="cpu", precision="fp32", threshold=0.3, tile=64,
                                   tile_merge="nms")
    image = (np.random.default_rng(3).random((100, 150, 3)) * 255).astype(np.uint8)
    dets = det.detect(image, ["cat", "dog"])
    assert len(dets) and dets.masks.image_size == (100, 150)
    best = dets[0]
    whole = Detector.from_pretrained(str(tiny_sam3), device="cpu", precision="fp32", threshold=0.3)
    for x1, y1, x2, y2 in tile_windows(100, 150, 64, det.config.tile_overlap).tolist():
        tile = whole.detect(np.ascontiguousarray(image[y1:y2, x1:x2]), ["cat", "dog"])
        moved = tile.xyxy + np.float32([x1, y1, x1, y1])
        same = np.flatnonzero(np.isclose(tile.scores, best.scores[0], atol=1e-6)
                              & np.isclose(moved, best.xyxy, atol=1e-3).all(axis=1))
        if len(same):
            expected = tile.masks[same[:1]].translate(x1, y1, (100, 150))
            np.testing.assert_array_equal(best.masks.to_dense(), expected.to_dense())
            return
    pytest.fail("the best tiled detection is in no tile")


def test_window_upsampling_equals_torch_bilinear():
    from ovdet.backends.sam3_masks import upsample_mask

    torch.manual_seed(0)
    for low, size in [((32, 32), (60, 90)), ((72, 72), (500, 333)), ((16, 16), (7, 5))]:
        logits = torch.randn(4, *low) - 6  # one object per mask, away from the borders
        logits[:, low[0] // 4: low[0] // 2, low[1] // 3: low[1] // 2] += 9
        full = torch.nn.functional.interpolate(logits.sigmoid()[None], size=size, mode="bilinear",
                                               align_corners=False)[0] > 0.5
        for lg, ref in zip(logits, full):
            crop, (y, x) = upsample_mask(lg, size)
            out = np.zeros(size, bool)
            out[y: y + crop.shape[0], x: x + crop.shape[1]] = crop
            np.testing.assert_array_equal(out, ref.numpy())
            assert crop.size < ref.numel()  # only the window that can be positive is made
