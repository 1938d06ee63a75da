"""Scores per box and class -> the detections to keep: threshold, NMS, top-k.

Torch tensors go through torchvision's NMS; numpy arrays (the torch-free ONNX path) through
`ovdet.geometry.nms`, the same greedy algorithm. torch is imported only for tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Selection:
    """Kept rows of one image, highest score first.

    index: (K,) int64 rows of the candidate boxes; class_ids: (K,) int64; scores: (K,) float32
    (torch tensors or numpy arrays, as the inputs were).
    """

    index: torch.Tensor | np.ndarray
    class_ids: torch.Tensor | np.ndarray
    scores: torch.Tensor | np.ndarray


def select_detections(
    boxes: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray,
    threshold: float | torch.Tensor | np.ndarray,
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
    if isinstance(scores, np.ndarray):
        return _select_numpy(boxes, scores, threshold, nms_iou, class_agnostic_nms, max_detections, multi_label)
    import torch
    from torchvision.ops import batched_nms, nms

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


def _select_numpy(boxes: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray, nms_iou: float,
                  class_agnostic_nms: bool, max_detections: int, multi_label: bool) -> Selection:
    """`select_detections` for numpy arrays, step for step."""
    from .geometry import nms

    per_class = isinstance(threshold, np.ndarray)
    if multi_label:
        index, class_ids = np.nonzero(scores > (threshold[None, :] if per_class else threshold))
        best = scores[index, class_ids]
    else:
        class_ids = scores.argmax(axis=-1)
        best = scores[np.arange(len(scores)), class_ids]
        index = np.nonzero(best > (threshold[class_ids] if per_class else threshold))[0]
        best, class_ids = best[index], class_ids[index]
    if nms_iou < 1.0 and len(index):
        order = nms(boxes[index], best, nms_iou, None if class_agnostic_nms else class_ids)
    else:
        order = np.argsort(-best, kind="stable")
    order = order[:max_detections]
    return Selection(index=index[order].astype(np.int64), class_ids=class_ids[order].astype(np.int64),
                     scores=best[order].astype(np.float32))
