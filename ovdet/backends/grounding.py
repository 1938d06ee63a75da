"""Grounding DINO and MM-Grounding-DINO (LLMDet checkpoints load as MM-GDINO) through
transformers: text and image fused in one network.

The class names become "a. b. c." prompts (`ovdet.backends.grounding_text`; a vocabulary longer
than `max_text_len` tokens is split into chunks). Each chunk runs the model's own forward, with
the image's backbone features computed once per image batch and the chunk's text tower output
computed once per vocabulary (`ovdet.backends.grounding_reuse`): a chunk's logits and boxes
equal a plain `model(**processor(images, chunk_text))` call.

Scores. transformers' `post_process_grounded_object_detection` gives a query the score
max over all tokens of sigmoid(logit) (the "." separators, [CLS] and [SEP] included) and names
it with the tokens above `text_threshold`. ovdet names each query with ONE class: the class
whose tokens hold the highest probability (max over the class's tokens); its score for that
class is the transformers score, and its score for every other class of the chunk is that
class's own max-over-tokens probability. Classes of other chunks score 0 on a query. So with
`multi_label` off and NMS off (the presets), a chunk's detections above the threshold are
exactly transformers' boxes and scores, each with one class id. Scores are sigmoid
probabilities of independent tokens, so queries of different chunks compare on one scale.
Boxes are clipped to the image (transformers leaves them unclipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..boxes import clip_to_image, cxcywh_to_xyxy, scale_normalized
from ..errors import OvdetError
from ..weights import load_checkpoint
from .base import RegionScores
from .grounding_reuse import SharedBackbone, SharedTextTower
from .grounding_text import PhraseEncoder, PhraseTable

# raw score of a class a query was not asked about (its chunk did not hold the class)
ABSENT_LOGIT = -100.0


def chunk_scores(logits: torch.Tensor, token_class: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's chunk logits -> per-class scores and raw logits.

    Args:
        logits: (Q, L) fp32 token logits of the chunk's L tokens.
        token_class: (L,) int64 vocabulary index of each token's class, -1 for separators.
        num_classes: C, the vocabulary size (classes + negatives).
    Returns:
        scores (Q, C) in [0, 1] and raw (Q, C) logits: per class the max over its tokens, except
        each query's best class, which gets the max over ALL tokens (transformers' score); 0
        (raw `ABSENT_LOGIT`) for classes outside the chunk.
    """
    q = logits.shape[0]
    tokens = token_class >= 0
    raw = torch.full((q, num_classes), ABSENT_LOGIT, dtype=logits.dtype, device=logits.device)
    index = token_class[tokens].to(logits.device)[None].expand(q, -1)
    raw = raw.scatter_reduce(1, index, logits[:, tokens], reduce="amax", include_self=True)
    best = raw.argmax(dim=1, keepdim=True)
    raw = raw.scatter(1, best, logits.max(dim=1, keepdim=True).values)
    scores = torch.sigmoid(raw)
    scores = torch.where(raw <= ABSENT_LOGIT, torch.zeros_like(scores), scores)
    return scores, raw


class GroundingBackend:
    """Wraps `GroundingDinoForObjectDetection` / `MMGroundingDinoForObjectDetection` and its
    processor. `chunk_tokens`: token budget of one prompt (default and maximum: the model's
    `max_text_len`)."""

    numpy_arrays = False

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype = torch.float32, identity: str = "",
                 chunk_tokens: int | None = None):
        self.model = model.eval().to(device)
        self.processor = processor
        self.device, self.dtype = device, dtype
        self.identity = identity or model.config.name_or_path
        self.family = model.config.model_type
        limit = int(model.config.max_text_len)
        self.chunk_tokens = min(limit, chunk_tokens or limit)
        base = model.model
        # the Swin and BERT towers in `dtype`, the fusion encoder, decoder and heads in fp32
        base.backbone.to(dtype)
        base.text_backbone.to(dtype)
        base.backbone = SharedBackbone(base.backbone, dtype)
        base.text_backbone = SharedTextTower(base.text_backbone, dtype)
        self.vision, self.text = base.backbone, base.text_backbone

    @classmethod
    def load(cls, path: str | Path, device: torch.device, dtype: torch.dtype, chunk_tokens: int | None = None):
        """Load a checkpoint folder (hub snapshot or `save_pretrained` output)."""
        from transformers import AutoModelForZeroShotObjectDetection

        model, processor, identity = load_checkpoint(Path(path), AutoModelForZeroShotObjectDetection, "Grounding DINO")
        return cls(model, processor, device, dtype, identity=identity, chunk_tokens=chunk_tokens)

    @property
    def name(self) -> str:
        return self.family

    def vocabulary_encoder(self, templates: Sequence[str], text_cache=None) -> PhraseEncoder:
        """The Detector's text side: names -> `PhraseTable` (prompts, not embeddings)."""
        return PhraseEncoder(self.processor.tokenizer, templates, self.chunk_tokens, self.family)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        raise OvdetError(f"{self.family} fuses text with each image: it has no class embeddings of its own")

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Same-size RGB uint8 (H, W, 3) images -> (B, 3, h, w) pixel values and (B, h, w)
        pixel mask, as the processor makes them (shortest edge 800, longest 1333)."""
        enc = self.processor.image_processor(images=list(images), return_tensors="pt")
        return enc["pixel_values"].to(self.device), enc["pixel_mask"].to(self.device)

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray], table: PhraseTable, boxes=None) -> list[RegionScores]:
        """RGB uint8 images + a `PhraseTable` -> per image Q x chunks candidates, (P, C) scores.

        Images of one size run as a batch (no padding, so each equals a call of its own)."""
        if boxes is not None:
            raise OvdetError(f"{self.family} predicts its own boxes; to score given boxes use a CLIP preset (backend: clip)")
        if not isinstance(table, PhraseTable):
            raise OvdetError(f"{self.family} reads class names, not embeddings (image exemplars are not supported)")
        results: list[RegionScores | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape, []).append(i)
        for index in groups.values():
            for i, cand in zip(index, self.predict_same_size([images[i] for i in index], table)):
                results[i] = cand
        return results

    def predict_same_size(self, images: Sequence[np.ndarray], table: PhraseTable) -> list[RegionScores]:
        h, w = images[0].shape[:2]
        pixels, mask = self.preprocess(images)
        n, c = len(images), len(table)
        scores = [[] for _ in range(n)]
        raws = [[] for _ in range(n)]
        boxes = [[] for _ in range(n)]
        with self.vision.hold():
            for chunk in table.chunks:
                out = self.model(pixel_values=pixels, pixel_mask=mask,
                                 input_ids=chunk.input_ids.to(self.device).expand(n, -1),
                                 attention_mask=chunk.attention_mask.to(self.device).expand(n, -1),
                                 token_type_ids=chunk.token_type_ids.to(self.device).expand(n, -1))
                length = chunk.input_ids.shape[1]
                for b in range(n):
                    s, r = chunk_scores(out.logits[b, :, :length].float(), chunk.token_class, c)
                    scores[b].append(s)
                    raws[b].append(r)
                    xyxy = scale_normalized(cxcywh_to_xyxy(out.pred_boxes[b].float()), w, h)
                    boxes[b].append(clip_to_image(xyxy, h, w))
        return [RegionScores(boxes=torch.cat(boxes[b]), scores=torch.cat(scores[b]), raw=torch.cat(raws[b]),
                             image_size=(h, w)) for b in range(n)]


__all__ = ["GroundingBackend", "chunk_scores"]
