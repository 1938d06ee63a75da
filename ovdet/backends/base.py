"""What every backend gives the Detector: candidate boxes with per-class scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:  # annotations only: ONNX backends return numpy arrays and load no torch
    import torch

    from ..proposers import Proposals


@dataclass(frozen=True)
class RegionScores:
    """Candidates for ONE image, before thresholding and NMS.

    boxes: (P, 4) float32 xyxy in original-image pixels, clipped to the image.
    scores: (P, C) float32 in [0, 1], calibrated per class (comparable across classes).
    raw: (P, C) float32, the uncalibrated score (logit or similarity) behind `scores`.
    image_size: (height, width) of the original image.
    Torch backends hold torch tensors; ONNX backends (`numpy_arrays = True`) numpy arrays.
    """

    boxes: torch.Tensor | np.ndarray
    scores: torch.Tensor | np.ndarray
    raw: torch.Tensor | np.ndarray
    image_size: tuple[int, int]


class Backend(Protocol):
    """A model family. Text is encoded once per vocabulary; images once per call."""

    device: torch.device

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(C,) prompts -> (C, D) class embeddings on `device`."""

    identity: str  # names the text tower in on-disk cache keys

    def predict(
        self, images: Sequence[np.ndarray], class_embeds: torch.Tensor, boxes: Sequence[Proposals] | None = None
    ) -> list[RegionScores]:
        """RGB uint8 (H, W, 3) images + (C, D) class embeddings -> candidates per image.

        `boxes`, one `Proposals` per image, asks a backend to score given regions instead of
        its own (backends that cannot raise `OvdetError`)."""
