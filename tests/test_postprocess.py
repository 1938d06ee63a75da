import pytest
import torch
from torchvision.ops import box_iou

from ovdet.boxes import clip_to_image, cxcywh_to_xyxy, scale_normalized
from ovdet.postprocess import select_detections


def random_candidates(p=200, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(p, 2, generator=g) * 80
    wh = torch.rand(p, 2, generator=g) * 30 + 5
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(p, c, generator=g)
    return boxes, scores


def test_threshold_is_strict_and_per_box_best_class():
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50.0]])
    scores = torch.tensor([[0.5, 0.2], [0.1, 0.7], [0.3, 0.29]])
    sel = select_detections(boxes, scores, threshold=0.5, nms_iou=1.0)
    assert sel.index.tolist() == [1]  # 0.5 is not > 0.5
    assert sel.class_ids.tolist() == [1]
    sel = select_detections(boxes, scores, threshold=0.0, nms_iou=1.0)
    assert sel.index.tolist() == [1, 0, 2] and sel.class_ids.tolist() == [1, 0, 0]


def test_per_class_thresholds():
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30.0]])
    scores = torch.tensor([[0.6, 0.0], [0.0, 0.6]])
    sel = select_detections(boxes, scores, threshold=torch.tensor([0.5, 0.7]), nms_iou=1.0)
    assert sel.index.tolist() == [0]


def test_class_aware_nms_keeps_overlaps_of_different_classes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10.0]])
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]])
    aware = select_detections(boxes, scores, threshold=0.1, nms_iou=0.5)
    assert aware.index.tolist() == [0, 2]
    agnostic = select_detections(boxes, scores, threshold=0.1, nms_iou=0.5, class_agnostic_nms=True)
    assert agnostic.index.tolist() == [0]
    off = select_detections(boxes, scores, threshold=0.1, nms_iou=1.0)
    assert off.index.tolist() == [0, 1, 2]


def test_nms_is_idempotent_and_leaves_no_same_class_overlap():
    boxes, scores = random_candidates()
    first = select_detections(boxes, scores, threshold=0.2, nms_iou=0.4, max_detections=1000)
    kept_boxes = boxes[first.index]
    one_hot = torch.zeros(len(first.index), scores.shape[1])
    one_hot[torch.arange(len(first.index)), first.class_ids] = first.scores
    second = select_detections(kept_boxes, one_hot, threshold=0.2, nms_iou=0.4, max_detections=1000)
    assert second.index.tolist() == list(range(len(first.index)))
    iou = box_iou(kept_boxes, kept_boxes)
    same = first.class_ids[:, None] == first.class_ids[None, :]
    off_diag = ~torch.eye(len(kept_boxes), dtype=torch.bool)
    assert (iou[same & off_diag] <= 0.4 + 1e-6).all()


def test_max_detections_keeps_the_best():
    boxes, scores = random_candidates()
    all_ = select_detections(boxes, scores, threshold=0.0, nms_iou=1.0, max_detections=10_000)
    top = select_detections(boxes, scores, threshold=0.0, nms_iou=1.0, max_detections=7)
    assert top.index.tolist() == all_.index[:7].tolist()
    assert torch.all(top.scores[:-1] >= top.scores[1:])


def test_no_candidates_above_threshold():
    boxes, scores = random_candidates(p=5)
    sel = select_detections(boxes, scores * 0.1, threshold=0.5)
    assert len(sel.index) == 0 and sel.scores.dtype == torch.float32


def test_box_helpers():
    b = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    xyxy = cxcywh_to_xyxy(b)
    assert torch.allclose(xyxy, torch.tensor([[0.4, 0.3, 0.6, 0.7]]))
    px = scale_normalized(xyxy, width=200, height=100)
    assert torch.allclose(px, torch.tensor([[80.0, 30.0, 120.0, 70.0]]))
    clipped = clip_to_image(torch.tensor([[-5.0, -1.0, 250.0, 90.0]]), height=80, width=200)
    assert clipped.tolist() == [[0.0, 0.0, 200.0, 80.0]]
    with pytest.raises(Exception):
        cxcywh_to_xyxy(torch.zeros(3, 5))


def test_multi_label_reports_a_box_per_class_above_threshold():
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30.0]])
    scores = torch.tensor([[0.9, 0.6, 0.1], [0.2, 0.3, 0.4]])
    sel = select_detections(boxes, scores, threshold=0.25, nms_iou=0.5, multi_label=True)
    assert list(zip(sel.index.tolist(), sel.class_ids.tolist())) == [(0, 0), (0, 1), (1, 2), (1, 1)]
    torch.testing.assert_close(sel.scores, torch.tensor([0.9, 0.6, 0.4, 0.3]))
    per_class = select_detections(boxes, scores, threshold=torch.tensor([0.95, 0.5, 0.5]), nms_iou=1.0, multi_label=True)
    assert list(zip(per_class.index.tolist(), per_class.class_ids.tolist())) == [(0, 1)]
    # class-agnostic NMS still leaves one label per object
    agnostic = select_detections(boxes, scores, threshold=0.25, nms_iou=0.5, multi_label=True, class_agnostic_nms=True)
    assert list(zip(agnostic.index.tolist(), agnostic.class_ids.tolist())) == [(0, 0), (1, 2)]
