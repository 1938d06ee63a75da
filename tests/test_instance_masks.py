"""`Masks`: compact instance masks. Dense <-> crops <-> COCO RLE round trips agree with
pycocotools byte for byte; selection, concatenation, translation and union keep masks aligned
with their detections."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ovdet.instance_masks import Masks
from ovdet.records import RecordError, detection_records, detections_from_records
from ovdet.structures import Detections


def random_masks(rng, n: int, h: int, w: int) -> np.ndarray:
    masks = np.zeros((n, h, w), bool)
    for k in range(n):
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        masks[k, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > 0.3
    return masks


def test_rle_equals_pycocotools_and_round_trips():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        dense = random_masks(rng, 3, h, w)
        masks = Masks.from_dense(dense)
        assert (masks.to_dense() == dense).all()
        expected = mask_utils.encode(np.asfortranarray(dense.transpose(1, 2, 0).astype(np.uint8)))
        got = masks.to_rle()
        assert [e["counts"].decode() for e in expected] == [g["counts"] for g in got]
        assert all(g["size"] == [h, w] for g in got)
        assert (Masks.from_rle(got, (h, w)).to_dense() == dense).all()
        assert (masks.areas == dense.sum(axis=(1, 2))).all()


def test_crops_are_tight_and_full_masks_and_empty_masks_work():
    dense = np.zeros((3, 5, 7), bool)
    dense[0] = True  # touches every border
    dense[2, 4, 6] = True  # one corner pixel
    masks = Masks.from_dense(dense)
    assert [c.shape for c in masks.crops] == [(5, 7), (0, 0), (1, 1)]
    assert masks.origins.tolist() == [[0, 0], [0, 0], [4, 6]]
    assert masks.boxes().tolist() == [[0, 0, 7, 5], [0, 0, 0, 0], [6, 4, 7, 5]]
    assert (Masks.from_rle(masks.to_rle(), (5, 7)).to_dense() == dense).all()


def test_selection_concat_translate_union():
    rng = np.random.default_rng(1)
    dense = random_masks(rng, 4, 20, 30)
    masks = Masks.from_dense(dense)
    keep = np.array([True, False, True, True])
    assert (masks[keep].to_dense() == dense[keep]).all()
    assert (masks[[3, 0]].to_dense() == dense[[3, 0]]).all()
    assert (masks[1:3].to_dense() == dense[1:3]).all()
    assert (Masks.concat([masks[:1], masks[1:]]).to_dense() == dense).all()
    moved = masks.translate(dx=5, dy=-3, image_size=(20, 40)).to_dense()
    expected = np.zeros((4, 20, 40), bool)
    expected[:, :17, 5:35] = dense[:, 3:, :]  # rows shifted above the top are clipped
    assert (moved == expected).all()
    assert (masks.union([0, 2]).to_dense()[0] == (dense[0] | dense[2])).all()


def test_from_crops_clips_to_the_image():
    crop = np.ones((4, 4), bool)
    masks = Masks.from_crops([crop], [[-2, 8]], (10, 10))
    expected = np.zeros((10, 10), bool)
    expected[0:2, 8:10] = True
    assert (masks.dense(0) == expected).all()


def test_polygons_follow_the_mask():
    dense = np.zeros((1, 20, 20), bool)
    dense[0, 4:12, 6:16] = True
    polygons = Masks.from_dense(dense).to_polygons(0)
    assert len(polygons) == 1
    xs, ys = polygons[0][0::2], polygons[0][1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == (6, 4, 15, 11)  # boundary pixel centres


def test_detections_carry_masks_through_selection_records_and_supervision():
    rng = np.random.default_rng(2)
    dense = random_masks(rng, 3, 24, 32)
    dets = Detections(xyxy=Masks.from_dense(dense).boxes(), scores=[0.9, 0.2, 0.6], class_ids=[0, 1, 0],
                      class_names=("a", "b"), image_size=(24, 32), masks=Masks.from_dense(dense))
    best = dets.sorted()[dets.sorted().scores > 0.5]
    assert (best.masks.to_dense() == dense[[0, 2]]).all()
    records = detection_records(dets)
    assert records[0]["mask"] == Masks.from_dense(dense[:1]).to_rle()[0]
    back = detections_from_records(records, (24, 32))
    assert (back.masks.to_dense() == dense).all() and "mask" not in back.extra
    sv = dets.to_supervision()
    assert sv.mask.shape == (3, 24, 32) and (sv.mask == dense).all()
    assert (Detections.from_supervision(sv, ("a", "b"), (24, 32)).masks.to_dense() == dense).all()
    joined = Detections.concat([dets[:1], dets[1:]])
    assert (joined.masks.to_dense() == dense).all()
    with pytest.raises(ValueError, match="masks"):
        Detections.concat([dets[:1], dets[1:].replace(masks=None)])
    with pytest.raises(ValueError, match="expected 3"):
        dets.replace(masks=Masks.from_dense(dense[:2]))


def test_a_malformed_mask_record_is_a_one_line_error():
    record = {"box": [0, 0, 1, 1], "score": 0.5, "class_id": 0, "class_name": "a",
              "mask": {"size": [5, 5], "counts": "1"}}
    with pytest.raises(RecordError, match="not COCO RLE"):
        detections_from_records([record], (10, 10))
