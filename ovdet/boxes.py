"""Pure box functions on torch tensors. Shapes and formats are in every docstring.

Formats: `xyxy` = x1, y1, x2, y2; `cxcywh` = centre x, centre y, width, height.
"Normalised" means divided by the reference width/height (values in [0, 1]).
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy, same units."""
    shape = boxes.shape
    return box_convert(boxes.reshape(-1, 4), "cxcywh", "xyxy").reshape(shape)


def scale_normalized(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """(..., 4) normalised xyxy -> pixels of a `width` x `height` reference frame."""
    scale = boxes.new_tensor([width, height, width, height])
    return boxes * scale


def clip_to_image(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 4) xyxy pixels clipped to [0, width] x [0, height]."""
    out = boxes.clone()
    out[..., 0::2] = out[..., 0::2].clamp(0, width)
    out[..., 1::2] = out[..., 1::2].clamp(0, height)
    return out
