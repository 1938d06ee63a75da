"""Hungarian matching of predicted tokens to ground-truth boxes (OWL / DETR recipe).

Cost of giving ground truth g to token p, all terms weighted 1 (scenic's OWL matcher):
  class: focal-style  alpha (1-s)^gamma (-log s) - (1-alpha) s^gamma (-log(1-s)),  s = sigmoid(logit[p, label g])
  box:   L1 distance of the normalised cxcywh boxes
  giou:  -GIoU of the boxes (torchvision's `generalized_box_iou`)
solved exactly by `scipy.optimize.linear_sum_assignment`.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_convert, generalized_box_iou

from .losses import FOCAL_ALPHA, FOCAL_GAMMA


def match_cost(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, target_boxes: torch.Tensor,
               alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """(P, G) matching cost.

    Args:
        logits: (P, Q) class logits of one image's P tokens against its Q queries.
        boxes: (P, 4) predicted boxes, normalised cxcywh.
        labels: (G,) the query index of each ground-truth box.
        target_boxes: (G, 4) ground-truth boxes, normalised cxcywh.
    """
    prob = logits[:, labels].float().sigmoid()  # (P, G)
    eps = 1e-8
    pos = alpha * (1 - prob) ** gamma * -(prob + eps).log()
    neg = (1 - alpha) * prob ** gamma * -(1 - prob + eps).log()
    cost_box = torch.cdist(boxes.float(), target_boxes.float(), p=1)
    cost_giou = -generalized_box_iou(box_convert(boxes.float(), "cxcywh", "xyxy"),
                                     box_convert(target_boxes.float(), "cxcywh", "xyxy"))
    return (pos - neg) + cost_box + cost_giou


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                    target_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(token indices (G,), ground-truth indices (G,)): the assignment of least total
    `match_cost`, each ground truth to a different token (needs P >= G)."""
    from scipy.optimize import linear_sum_assignment

    if len(labels) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return empty, empty
    cost = match_cost(logits, boxes, labels, target_boxes).cpu().numpy()
    rows, cols = linear_sum_assignment(np.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6))
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.long, device=boxes.device)  # noqa: E731
    return as_tensor(rows), as_tensor(cols)


__all__ = ["hungarian_match", "match_cost"]
