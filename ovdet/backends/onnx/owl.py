"""OWL-ViT / OWLv2 exports: image graph once per image, class head per vocabulary, in numpy.

Mirrors `ovdet.backends.owl.OwlBackend` (which documents the box geometry): the image graph
gives every patch token a feature, a normalised cxcywh box (and OWLv2's objectness); the
class-head graph scores the tokens against the (C, D) class embeddings.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..base import RegionScores
from ...errors import ConfigError, OvdetError
from ...geometry import normalised_to_pixels
from ...scoring import Scorer, sigmoid
from .preprocess import padded_square_pixels, square_resize_pixels
from .session import Runner

TEXT_BATCH = 256  # prompts per text-graph run: bounds memory for large vocabularies


def pixels_for(images: Sequence[np.ndarray], preprocess: dict) -> np.ndarray:
    """RGB uint8 (H, W, 3) images -> (B, 3, S, S) float32 as the manifest's preprocessing says."""
    fn = padded_square_pixels if preprocess["mode"] == "padded_square" else square_resize_pixels
    return fn(images, preprocess["size"], preprocess["mean"], preprocess["std"])


class OnnxOwlBackend:
    """The Backend protocol over an OWL export; arrays are numpy throughout."""

    numpy_arrays = True

    def __init__(self, runner: Runner, objectness_weight: float = 0.0):
        self.runner = runner
        manifest = runner.manifest
        self.device = runner.device
        self.identity = runner.identity
        self.name = manifest["model"]["model_type"]
        self.pads_to_square = bool(manifest["boxes"]["pads_to_square"])
        self.has_objectness = "objectness" in manifest["graphs"]["image"]["outputs"]
        if objectness_weight and not self.has_objectness:
            raise ConfigError("objectness_weight needs OWLv2's objectness head; OWL-ViT v1 has none")
        self.scorer = Scorer(objectness_weight=objectness_weight)

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """(N,) prompts -> (N, D) float32 text embeddings (projected, not normalised)."""
        tok = self.runner.tokenizer
        ids = tok.ids(list(prompts))
        parts = []
        for start in range(0, len(ids), TEXT_BATCH):
            input_ids, mask = tok.pad(ids[start : start + TEXT_BATCH])
            parts.append(self.runner.run("text", input_ids=input_ids, attention_mask=mask)[0])
        return np.concatenate(parts).astype(np.float32)

    def image_features(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Images -> [feats (B, P, D), boxes (B, P, 4) normalised cxcywh(, objectness (B, P))]."""
        return self.runner.run("image", pixel_values=pixels_for(images, self.runner.manifest["preprocess"]))

    def given_boxes(self, boxes, height: int, width: int):
        raise OvdetError("OWL models predict their own boxes; to score given boxes use a CLIP preset (backend: clip)")

    def predict(self, images: Sequence[np.ndarray], class_embeds: np.ndarray, boxes=None) -> list[RegionScores]:
        if boxes is not None:
            self.given_boxes(boxes, 0, 0)
        outputs = self.image_features(images)
        feats, norm_boxes = outputs[0], outputs[1]
        logits = self.runner.run("class_head", image_feats=feats, class_embeds=np.asarray(class_embeds, np.float32))[0]
        objectness = outputs[2] if self.scorer.objectness_weight else None
        out = []
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            scores = self.scorer.fuse(sigmoid(logits[i]), None if objectness is None else objectness[i])
            out.append(RegionScores(boxes=normalised_to_pixels(norm_boxes[i], h, w, self.pads_to_square),
                                    scores=scores, raw=logits[i], image_size=(h, w)))
        return out
