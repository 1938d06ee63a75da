"""Region-class similarities -> calibrated scores; negative prompts; objectness fusion.

Scores are comparable across classes (one threshold serves all): either a softmax over the
classes plus a background entry, whose mass goes to "none of these", or a per-class sigmoid
with a shared temperature and bias. Each function takes torch tensors or numpy arrays (the
torch-free ONNX path) and returns the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Scorer:
    """How cosine similarities become scores in [0, 1].

    mode: "softmax" or "sigmoid".
    logit_scale: temperature multiplying cosines (CLIP's own is 100).
    background_similarity: softmax: the cosine of a constant background entry (a region
        must be more similar to a class than this to be claimed by it); sigmoid: the cosine
        at which the score is 0.5.
    objectness_weight: w in score = class_score^(1 - w) * objectness^w (weighted geometric mean).
    """

    mode: str = "softmax"
    logit_scale: float = 100.0
    background_similarity: float = 0.2
    objectness_weight: float = 0.5

    def class_scores(self, sims: torch.Tensor) -> torch.Tensor:
        """(N, K) cosine similarities (K = classes + negatives) -> (N, K) scores in [0, 1]."""
        if isinstance(sims, np.ndarray):
            return self._class_scores_numpy(sims)
        import torch

        logits = sims.float() * self.logit_scale
        if self.mode == "sigmoid":
            return torch.sigmoid(logits - self.background_similarity * self.logit_scale)
        background = torch.full_like(logits[:, :1], self.background_similarity * self.logit_scale)
        return torch.softmax(torch.cat([logits, background], dim=1), dim=1)[:, :-1]

    def _class_scores_numpy(self, sims: np.ndarray) -> np.ndarray:
        logits = sims.astype(np.float32) * np.float32(self.logit_scale)
        if self.mode == "sigmoid":
            return sigmoid(logits - np.float32(self.background_similarity * self.logit_scale))
        background = np.full_like(logits[:, :1], self.background_similarity * self.logit_scale)
        full = np.concatenate([logits, background], axis=1)
        e = np.exp(full - full.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True))[:, :-1]

    def fuse(self, scores: torch.Tensor, objectness: torch.Tensor | None) -> torch.Tensor:
        """(N, K) class scores, (N,) objectness in [0, 1] -> (N, K) fused scores."""
        if objectness is None or self.objectness_weight == 0.0:
            return scores
        w = self.objectness_weight
        if isinstance(scores, np.ndarray):
            obj = np.clip(objectness.astype(np.float32), 0, 1)[:, None]
            return np.clip(scores, 0, None) ** np.float32(1 - w) * obj ** np.float32(w)
        return scores.clamp_min(0) ** (1 - w) * objectness.float().clamp(0, 1)[:, None] ** w

    def __call__(self, sims: torch.Tensor, objectness: torch.Tensor | None = None) -> torch.Tensor:
        return self.fuse(self.class_scores(sims), objectness)


def drop_negatives(scores: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, C + K) scores over classes then K negative prompts -> (N, C) class scores, zero for
    every box whose best match is a negative (so no threshold >= 0 keeps it)."""
    if scores.shape[1] == num_classes:
        return scores
    keep = scores.argmax(1) < num_classes  # (N,) bool; `scores * bool` keeps the float dtype
    return scores[:, :num_classes] * keep[:, None]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in numpy (float32 in, float32 out)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)
