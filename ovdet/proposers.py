"""Class-agnostic region proposers: where the objects might be, before naming them.

Every proposer returns `Proposals` for one image: boxes in original-image pixels and an
objectness in [0, 1] (1.0 where the proposer has no notion of objectness).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from .errors import OvdetError
from .geometry import check_boxes, window_boxes


@dataclass(frozen=True)
class Proposals:
    """boxes: (N, 4) float32 xyxy, original-image pixels; objectness: (N,) float32 in [0, 1]."""

    boxes: torch.Tensor
    objectness: torch.Tensor

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4 or self.objectness.shape != (len(self.boxes),):
            raise ValueError(f"Proposals need boxes (N, 4) and objectness (N,), got {tuple(self.boxes.shape)} and {tuple(self.objectness.shape)}")


class Proposer(Protocol):
    def propose(self, images: Sequence[np.ndarray]) -> list[Proposals]:
        """RGB uint8 (H, W, 3) images -> one `Proposals` per image."""


def _valid(boxes: torch.Tensor, height: int, width: int, min_size: float = 1.0) -> torch.Tensor:
    """Boolean (N,) mask of boxes at least `min_size` px wide and high after clipping."""
    x1, y1 = boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height)
    x2, y2 = boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)
    return ((x2 - x1) >= min_size) & ((y2 - y1) >= min_size)


class OwlObjectnessProposer:
    """OWLv2's objectness head: the top-k patch-token boxes by objectness (sigmoid)."""

    def __init__(self, owl_backend, top_k: int = 100):
        if not hasattr(owl_backend.model, "objectness_predictor"):
            raise OvdetError("the OWL objectness proposer needs an OWLv2 checkpoint (OWL-ViT v1 has no objectness head)")
        self.owl = owl_backend
        self.top_k = top_k

    @torch.inference_mode()
    def propose(self, images: Sequence[np.ndarray]) -> list[Proposals]:
        feats, boxes = self.owl.image_features(self.owl.preprocess(images))
        objectness = torch.sigmoid(self.owl.model.objectness_predictor(feats).float())
        out = []
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            px = self.owl.to_pixels(boxes[i], h, w)
            obj = torch.where(_valid(px, h, w), objectness[i], torch.zeros_like(objectness[i]))
            top = torch.topk(obj, k=min(self.top_k, len(obj))).indices
            top = top[obj[top] > 0]
            out.append(Proposals(boxes=px[top].float(), objectness=obj[top].float()))
        return out


class WindowProposer:
    """Weight-free multi-scale sliding windows, for a pure-CLIP fallback.

    Window sides are fractions of the image's shorter side, at three aspect ratios, with 50 %
    overlap; the whole image is always included. Objectness is 1 (no evidence either way).
    """

    def __init__(self, scales: Sequence[float] = (0.3, 0.5, 0.75), ratios: Sequence[float] = (0.5, 1.0, 2.0), overlap: float = 0.5):
        self.scales, self.ratios, self.overlap = tuple(scales), tuple(ratios), overlap

    def windows(self, height: int, width: int) -> torch.Tensor:
        """(N, 4) xyxy windows covering a `height` x `width` image."""
        return torch.from_numpy(window_boxes(height, width, self.scales, self.ratios, self.overlap))

    def propose(self, images: Sequence[np.ndarray]) -> list[Proposals]:
        out = []
        for image in images:
            boxes = self.windows(*image.shape[:2])
            out.append(Proposals(boxes=boxes, objectness=torch.ones(len(boxes))))
        return out


def given_boxes(boxes, height: int, width: int) -> Proposals:
    """User-supplied boxes for one image: (N, 4) xyxy pixels -> Proposals (objectness 1),
    clipped to the image.

    Raises `OvdetError` for malformed boxes (wrong shape, x2 <= x1, outside the image)."""
    arr = check_boxes(boxes, height, width)
    return Proposals(boxes=torch.from_numpy(arr), objectness=torch.ones(len(arr)))
