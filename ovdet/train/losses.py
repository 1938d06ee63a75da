"""The OWL training loss of one image, summed over its boxes (the caller divides by the number
of ground-truth boxes in the global batch, as DETR does, so a batch split over processes
gives the same gradient):

  focal:      sigmoid focal loss (gamma 2, alpha 0.3; torchvision's `sigmoid_focal_loss`) of
              every token against every valid query, target 1 where a token is matched to a
              box of that query's class;
  l1, giou:   on the matched tokens' boxes (normalised cxcywh; GIoU through torchvision's
              `generalized_box_iou_loss` on xyxy);
  objectness: OWLv2 only, the same focal loss on the objectness logit, target 1 on matched tokens.
Weights are 1 (scenic's OWL recipe).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

FOCAL_ALPHA = 0.3
FOCAL_GAMMA = 2.0
TERMS = ("focal", "l1", "giou", "objectness")


@dataclass
class ImageTarget:
    """One image's ground truth: `boxes` (G, 4) normalised cxcywh in the model's input frame;
    `labels` (G,) query indices; `query_mask` (Q,) bool, the queries that exist (padding off)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    query_mask: torch.Tensor


def image_loss(logits: torch.Tensor, boxes: torch.Tensor, objectness: torch.Tensor | None, target: ImageTarget,
               match: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Summed loss terms of one image.

    Args:
        logits: (P, Q) class logits; boxes: (P, 4) predicted normalised cxcywh;
        objectness: (P,) objectness logits or None (OWL-ViT v1 has no objectness head).
        match: (token indices (M,), ground-truth indices (M,)) from `hungarian_match`.
    Returns: {"focal", "l1", "giou", "objectness"} scalar sums (objectness 0 without a head).
    """
    src, tgt = match
    logits = logits.float()
    labels = torch.zeros_like(logits)
    labels[src, target.labels[tgt]] = 1.0
    focal = sigmoid_focal_loss(logits, labels, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="none")
    focal = (focal * target.query_mask[None, :].to(focal)).sum()
    pred, true = boxes[src].float(), target.boxes[tgt].float()
    l1 = (pred - true).abs().sum()
    giou = generalized_box_iou_loss(box_convert(pred, "cxcywh", "xyxy"), box_convert(true, "cxcywh", "xyxy"),
                                    reduction="sum")
    obj = logits.new_zeros(())
    if objectness is not None:
        is_object = torch.zeros_like(objectness, dtype=torch.float32)
        is_object[src] = 1.0
        obj = sigmoid_focal_loss(objectness.float(), is_object, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="sum")
    return {"focal": focal, "l1": l1, "giou": giou, "objectness": obj}


__all__ = ["FOCAL_ALPHA", "FOCAL_GAMMA", "ImageTarget", "TERMS", "image_loss"]
