"""Scores per box and class -> the detections to keep: threshold, NMS, top-k."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, nms


@dataclass(frozen=True)
class Selection:
    """Kept rows of one image, highest score first.

    index: (K,) int64 rows of the candidate boxes; class_ids: (K,) int64; scores: (K,) float32.
    """

    index: torch.Tensor
    class_ids: torch.Tensor
    scores: torch.Tensor


def select_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    threshold: float | torch.Tensor,
    nms_iou: float = 0.5,
    class_agnostic_nms: bool = False,
    max_detections: int = 100,
    multi_label: bool = False,
) -> Selection:
    """Pick detections from candidate boxes of ONE image.

    Args:
        boxes: (P, 4) xyxy, any units (NMS is scale-invariant).
        scores: (P, C) per-class scores in [0, 1].
        threshold: keep scores strictly above it; a float, or a (C,) tensor of per-class values.
        nms_iou: IoU above which the lower-scored box of the same class is suppressed;
            >= 1.0 disables NMS.
        class_agnostic_nms: suppress across classes too (one box per object).
        max_detections: keep at most this many, by score.
        multi_label: every (box, class) pair above the threshold is a candidate, so one box
            may be reported for several classes (what COCO/LVIS AP rewards); otherwise each
            box takes its best class only, like transformers' `post_process_object_detection`.
    """
    thr = threshold[None, :] if isinstance(threshold, torch.Tensor) else threshold
    if multi_label:
        index, class_ids = torch.nonzero(scores > thr, as_tuple=True)
        best = scores[index, class_ids]
    else:
        best, class_ids = scores.max(dim=-1)
        keep = best > (threshold[class_ids] if isinstance(threshold, torch.Tensor) else threshold)
        index = torch.nonzero(keep).flatten()
        best, class_ids = best[index], class_ids[index]
    cand = boxes[index].float()
    if nms_iou < 1.0 and len(index):
        if class_agnostic_nms:
            order = nms(cand, best.float(), nms_iou)
        else:
            order = batched_nms(cand, best.float(), class_ids, nms_iou)
    else:
        # stable so that equal scores keep the model's token order (matches transformers)
        order = torch.sort(best, descending=True, stable=True).indices
    order = order[:max_detections]
    return Selection(index=index[order], class_ids=class_ids[order], scores=best[order].float())
