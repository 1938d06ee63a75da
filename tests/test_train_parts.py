"""`ovdet.train`'s parts against direct implementations: the Hungarian matcher against a brute
force over every assignment, the losses against their formulas and torchvision's
`generalized_box_iou`, WiSE-FT merging, augmentation geometry, the data readers and the
learned class-embedding file."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from ovdet.learned import apply_learned, load_learned, save_learned
from ovdet.train.augment import hflip, mosaic, random_crop
from ovdet.train.data import load_data, split_data
from ovdet.train.losses import ImageTarget, image_loss
from ovdet.train.matcher import hungarian_match, match_cost
from ovdet.train.merge import merge_state
from train_data import make_split


def _random_case(seed: int, p: int, q: int, g: int):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(p, q, generator=gen) * 2
    centres = torch.rand(p + g, 2, generator=gen) * 0.6 + 0.2
    sizes = torch.rand(p + g, 2, generator=gen) * 0.3 + 0.05
    boxes = torch.cat([centres, sizes], 1)
    labels = torch.randint(0, q, (g,), generator=gen)
    return logits, boxes[:p], labels, boxes[p:]


@pytest.mark.parametrize("seed,p,g", [(0, 5, 3), (1, 6, 2), (2, 4, 4), (3, 7, 3)])
def test_matcher_finds_the_least_cost_assignment(seed, p, g):
    logits, boxes, labels, targets = _random_case(seed, p, 4, g)
    rows, cols = hungarian_match(logits, boxes, labels, targets)
    cost = match_cost(logits, boxes, labels, targets)
    found = float(cost[rows, cols].sum())
    best = min(float(sum(cost[perm[j], j] for j in range(g))) for perm in itertools.permutations(range(p), g))
    assert sorted(cols.tolist()) == list(range(g)) and len(set(rows.tolist())) == g
    assert found == pytest.approx(best, abs=1e-5)


def test_match_cost_terms_are_the_formulas():
    logits, boxes, labels, targets = _random_case(5, 3, 2, 2)
    cost = match_cost(logits, boxes, labels, targets)
    xyxy = lambda b: box_convert(b, "cxcywh", "xyxy")  # noqa: E731
    giou = generalized_box_iou(xyxy(boxes), xyxy(targets))
    for i in range(3):
        for j in range(2):
            s = torch.sigmoid(logits[i, labels[j]])
            focal = 0.3 * (1 - s) ** 2 * -torch.log(s + 1e-8) - 0.7 * s ** 2 * -torch.log(1 - s + 1e-8)
            direct = focal + (boxes[i] - targets[j]).abs().sum() - giou[i, j]
            assert float(cost[i, j]) == pytest.approx(float(direct), abs=1e-5)


def test_losses_equal_direct_implementations():
    logits, boxes, labels, targets = _random_case(7, 6, 3, 2)
    objectness = torch.randn(6)
    mask = torch.tensor([True, True, False])  # the third query is padding
    match = (torch.tensor([4, 1]), torch.tensor([0, 1]))
    terms = image_loss(logits, boxes, objectness, ImageTarget(targets, labels, mask), match)

    def focal(x, t):
        p = torch.sigmoid(x)
        ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
        p_t = p * t + (1 - p) * (1 - t)
        return ((0.3 * t + 0.7 * (1 - t)) * ce * (1 - p_t) ** 2)

    onehot = torch.zeros(6, 3)
    onehot[4, labels[0]] = onehot[1, labels[1]] = 1
    assert float(terms["focal"]) == pytest.approx(float((focal(logits, onehot) * mask).sum()), rel=1e-5)
    l1 = (boxes[4] - targets[0]).abs().sum() + (boxes[1] - targets[1]).abs().sum()
    assert float(terms["l1"]) == pytest.approx(float(l1), rel=1e-6)
    xyxy = lambda b: box_convert(b, "cxcywh", "xyxy")  # noqa: E731
    giou = generalized_box_iou(xyxy(boxes[[4, 1]]), xyxy(targets))
    assert float(terms["giou"]) == pytest.approx(float((1 - giou.diagonal()).sum()), rel=1e-5)
    is_obj = torch.zeros(6)
    is_obj[[4, 1]] = 1
    assert float(terms["objectness"]) == pytest.approx(float(focal(objectness, is_obj).sum()), rel=1e-5)


def test_merge_zero_is_the_base_and_one_the_tuned():
    gen = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(5, 3, generator=gen), "n": torch.tensor([3])}
    tuned = {"w": torch.randn(5, 3, generator=gen), "n": torch.tensor([3])}
    assert torch.equal(merge_state(base, tuned, 0.0)["w"], base["w"])
    assert torch.allclose(merge_state(base, tuned, 1.0)["w"], tuned["w"])
    assert torch.allclose(merge_state(base, tuned, 0.25)["w"], 0.75 * base["w"] + 0.25 * tuned["w"], atol=1e-6)


def test_augmentations_move_boxes_with_the_pixels():
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 5:25] = 255
    boxes = np.array([[5, 10, 25, 20]], np.float32)
    flipped, fboxes = hflip(image, boxes)
    x1, y1, x2, y2 = fboxes[0].astype(int)
    assert flipped[y1:y2, x1:x2].min() == 255 and flipped.sum() == image.sum()
    rng = np.random.default_rng(0)
    for _ in range(10):
        crop, cboxes, clabels = random_crop(image, boxes, np.array([0]), rng)
        for b in cboxes.astype(int):
            assert crop[b[1]:b[3], b[0]:b[2]].min() == 255
    canvas, mboxes, mlabels = mosaic([(image, boxes, np.array([k])) for k in range(4)])
    assert canvas.shape == (120, 120, 3) and mlabels.tolist() == [0, 1, 2, 3]
    for b in mboxes.astype(int):
        assert canvas[b[1]:b[3], b[0]:b[2]].min() == 255


def test_readers_coco_yolo_and_label_folder(tmp_path):
    coco = make_split(tmp_path / "coco", "train", ["red square", "blue circle"], 4, seed=0)
    data = load_data(coco)
    assert data.classes == ("red square", "blue circle") and len(data) == 4
    # the same set in YOLO's layout, as `ovdet label` writes it
    ann = json.loads(coco.read_text())
    yolo = tmp_path / "label" / "yolo"
    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "labels" / "train").mkdir(parents=True)
    for img in ann["images"]:
        (yolo / "images" / "train" / img["file_name"]).symlink_to(coco.parent / img["file_name"])
        lines = [f"{a['category_id'] - 1} {(a['bbox'][0] + a['bbox'][2] / 2) / 96} {(a['bbox'][1] + a['bbox'][3] / 2) / 96} "
                 f"{a['bbox'][2] / 96} {a['bbox'][3] / 96}" for a in ann["annotations"] if a["image_id"] == img["id"]]
        (yolo / "labels" / "train" / img["file_name"].replace(".png", ".txt")).write_text("\n".join(lines))
    (yolo / "data.yaml").write_text("train: images/train\nval: images/train\nnames: {0: red square, 1: blue circle}\n")
    from_yolo = load_data(tmp_path / "label")
    assert from_yolo.classes == data.classes
    for a, b in zip(data.samples, from_yolo.samples):
        assert np.allclose(a.boxes, b.boxes, atol=1e-3) and a.labels.tolist() == b.labels.tolist()
    train, val = split_data(data, 0.25, seed=0)
    assert len(train) == 3 and len(val) == 1
    with pytest.raises(Exception, match="not found"):
        load_data(tmp_path / "nope.json")


def test_learned_file_round_trip_and_override(tmp_path):
    table = torch.randn(2, 8)
    save_learned(tmp_path, ["Red Square", "blue circle"], table)
    learned = load_learned(tmp_path)
    assert set(learned) == {"red square", "blue circle"}
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    out = apply_learned(["dog", "red square", "cat"], text, learned)
    assert torch.equal(out[0], text[0]) and torch.equal(out[2], text[2])
    assert torch.allclose(out[1], torch.nn.functional.normalize(table[0], dim=0))
    assert load_learned(tmp_path / "missing") is None
