"""What every backend gives the Detector: candidate boxes with per-class scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:  # annotations only: ONNX backends return numpy arrays and load no torch
    import torch

    from ..instance_masks import Masks
    from ..proposers import Proposals


@dataclass(frozen=True)
class RegionScores:
    """Candidates for ONE image, before thresholding and NMS.

    boxes: (P, 4) float32 xyxy in original-image pixels, clipped to the image.
    scores: (P, C) float32 in [0, 1], calibrated per class (comparable across classes).
    raw: (P, C) float32, the uncalibrated score (logit or similarity) behind `scores`.
    image_size: (height, width) of the original image.
    masks: None, or the candidates' masks for backends that segment (`CandidateMasks`).
    Torch backends hold torch tensors; ONNX backends (`numpy_arrays = True`) numpy arrays.
    """

    boxes: torch.Tensor | np.ndarray
    scores: torch.Tensor | np.ndarray
    raw: torch.Tensor | np.ndarray
    image_size: tuple[int, int]
    masks: CandidateMasks | None = None


class CandidateMasks(Protocol):
    """Masks of a backend's P candidates, made full-size only for those kept (a backend holds
    them at its own resolution, e.g. low-resolution logits)."""

    def select(self, rows: np.ndarray, image_size: tuple[int, int]) -> Masks:
        """The masks of candidates `rows` ((K,) int64, in that order) on an image of
        `image_size` = (height, width) (the original image's)."""


@dataclass(frozen=True)
class StoredRegions:
    """One image's regions in the form a search index stores them (`region_rows` of a backend
    that supports `ovdet index`): everything its class head needs to score them later against
    any vocabulary, with the same scores as `predict`.

    vectors: (N, E) float32 per-region vectors, `score_rows`'s input; their dot product with
        `query_vectors(class_embeds)` is the backend's logit or similarity (what an ANN index
        ranks by).
    boxes: (N, 4) float32 xyxy pixels of the image as decoded, clipped; empty boxes left out.
    objectness: (N,) float32 in [0, 1], or None when the model has none.
    image_vector: (E,) float32, one vector for the whole image in the same space.
    image_size: (height, width) of the image as decoded.
    """

    vectors: torch.Tensor
    boxes: torch.Tensor
    objectness: torch.Tensor | None
    image_vector: torch.Tensor
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


class TwoPhaseBackend(Backend, Protocol):
    """A backend whose image pass does not depend on the vocabulary (OWL, CLIP regions), split
    in two so that a server can encode images that arrive with different vocabularies in one
    pass and score each against its own class embeddings. `predict(images, e, boxes)` equals
    `score(encode_images(images, boxes), e)`."""

    def encode_images(self, images: Sequence[np.ndarray], boxes: Sequence[Proposals] | None = None) -> list[Any]:
        """RGB uint8 (H, W, 3) images -> one vocabulary-free feature object per image (opaque to
        callers; hand them back to `score` of the same backend, in any grouping)."""

    def score(self, features: Sequence[Any], class_embeds: torch.Tensor) -> list[RegionScores]:
        """Features of `encode_images` + (C, D) class embeddings -> candidates per image."""


def splits_image_pass(backend: Backend) -> bool:
    """True when `backend` implements the two-phase protocol (YOLO-World fuses the text into
    its image pass, so it cannot)."""
    return callable(getattr(backend, "encode_images", None)) and callable(getattr(backend, "score", None))
