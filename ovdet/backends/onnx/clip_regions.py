"""CLIP region exports: proposals (OWLv2 objectness graph, sliding windows or given boxes),
square crops through the exported CLIP image tower, scored by `ovdet.scoring.Scorer`.

Mirrors `ovdet.backends.clip_regions.ClipRegionBackend` in crop mode, in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..base import RegionScores
from ...errors import OvdetError
from ...geometry import check_boxes, large_enough, normalised_to_pixels, square_crops, window_boxes
from ...scoring import Scorer
from .owl import TEXT_BATCH, pixels_for
from .preprocess import square_resize_pixels
from .session import Runner

CROP_BATCH = 64  # crops per image-graph run


@dataclass(frozen=True)
class Regions:
    """Proposals of one image: boxes (N, 4) float32 xyxy pixels, objectness (N,) in [0, 1]."""

    boxes: np.ndarray
    objectness: np.ndarray


class OnnxClipRegionBackend:
    """The Backend protocol over a CLIP region export; arrays are numpy throughout."""

    numpy_arrays = True

    def __init__(self, runner: Runner, config):
        self.runner = runner
        manifest = runner.manifest
        self.device = runner.device
        self.identity = runner.identity
        self.proposer = manifest["proposer"]
        self.crop_context = float(manifest["crop_context"])
        self.scorer = Scorer(mode=config.scoring, logit_scale=config.logit_scale,
                             background_similarity=config.background_similarity,
                             objectness_weight=config.objectness_weight)
        self.top_k = config.proposals

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """(N,) prompts -> (N, D) unit embeddings; batched shortest first, as ClipModel does,
        so each batch pads to nearly its own length."""
        tok = self.runner.tokenizer
        ids = tok.ids(list(prompts))
        out = np.empty((len(ids), self.runner.manifest["graphs"]["text"]["outputs"]["text_embeds"][1]), np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(ids), TEXT_BATCH):
            batch = order[start : start + TEXT_BATCH]
            input_ids, mask = tok.pad([ids[i] for i in batch])
            out[batch] = self.runner.run("text", input_ids=input_ids, attention_mask=mask)[0]
        return out

    def given_boxes(self, boxes, height: int, width: int) -> Regions:
        arr = check_boxes(boxes, height, width)
        return Regions(arr, np.ones(len(arr), np.float32))

    def propose(self, images: Sequence[np.ndarray]) -> list[Regions]:
        kind = self.proposer["kind"]
        if kind == "windows":
            p = self.proposer
            out = []
            for im in images:
                boxes = window_boxes(*im.shape[:2], p["scales"], p["ratios"], p["overlap"])
                out.append(Regions(boxes, np.ones(len(boxes), np.float32)))
            return out
        if kind != "owlv2":
            raise OvdetError("this configuration scores given boxes only (proposer: boxes): pass boxes / --boxes")
        norm_boxes, objectness = self.runner.run("proposer", pixel_values=pixels_for(images, self.proposer["preprocess"]))
        out = []
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            px = normalised_to_pixels(norm_boxes[i], h, w, pads_to_square=True)
            obj = np.where(large_enough(px, h, w), objectness[i], 0).astype(np.float32)
            top = np.argsort(-obj, kind="stable")[: min(self.top_k, len(obj))]
            top = top[obj[top] > 0]
            out.append(Regions(px[top], obj[top]))
        return out

    def embed_crops(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per image (N_i, 4) xyxy boxes -> per image (N_i, D) unit embeddings."""
        crops = [c for image, b in zip(images, boxes) for c in square_crops(image, b, self.crop_context)]
        pre = self.runner.manifest["preprocess"]
        dim = self.runner.manifest["graphs"]["image"]["outputs"]["image_embeds"][1]
        parts = [np.zeros((0, dim), np.float32)]
        for start in range(0, len(crops), CROP_BATCH):
            pixels = square_resize_pixels(crops[start : start + CROP_BATCH], pre["size"], pre["mean"], pre["std"])
            parts.append(self.runner.run("image", pixel_values=pixels)[0])
        flat = np.concatenate(parts)
        return np.split(flat, np.cumsum([len(b) for b in boxes])[:-1])

    def predict(self, images: Sequence[np.ndarray], class_embeds: np.ndarray, boxes: Sequence[Regions] | None = None
                ) -> list[RegionScores]:
        regions = self.propose(images) if boxes is None else list(boxes)
        embeds = self.embed_crops(images, [r.boxes for r in regions])
        out = []
        for image, props, emb in zip(images, regions, embeds):
            sims = emb @ np.asarray(class_embeds, np.float32).T  # (N, C + K) cosine similarities
            out.append(RegionScores(boxes=props.boxes.astype(np.float32), scores=self.scorer(sims, props.objectness),
                                    raw=sims, image_size=tuple(image.shape[:2])))
        return out
