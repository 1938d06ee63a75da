"""The OWL model as it trains: one `nn.Module` whose forward gives class logits, boxes and
objectness for a batch (so torch's DDP can wrap it), the text side (prompts -> embeddings,
cached while the text tower is frozen), and the pixel / box geometry of the model's input.

transformers' OWL models take no labels (5.24), so the forward is assembled from their parts:
`image_embedder` -> `box_predictor` / `class_predictor` / `objectness_predictor`, exactly the
calls the detection backend (`ovdet.backends.owl`) makes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def clip_of(model) -> nn.Module:
    """The CLIP-like part holding the towers: `.owlv2` or `.owlvit`."""
    return getattr(model, "owlv2", None) or model.owlvit


class OwlTrainModule(nn.Module):
    """`model` (an OWL-ViT / OWLv2 for object detection) plus, in prompt mode, the learned
    (C, D) class embeddings `prompts` (the trained classes' rows of every query table)."""

    def __init__(self, model: nn.Module, prompts: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.prompts = nn.Parameter(prompts.clone()) if prompts is not None else None

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(U, L) tokens -> (U, D) projected text embeddings (not normalised)."""
        out = clip_of(self.model).get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def forward(self, pixel_values: torch.Tensor, query_index: torch.Tensor, query_mask: torch.Tensor,
                text_embeds: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None):
        """Per-image queries against the image's tokens.

        Args:
            pixel_values: (B, 3, S, S) model input.
            query_index: (B, Q) rows of the query table [prompts (C); text (U)] for each image.
            query_mask: (B, Q) bool, False for padding.
            text_embeds: (U, D) precomputed text embeddings (frozen text tower), or
            input_ids / attention_mask: (U, L) prompts to encode here (text tower training).
        Returns:
            logits (B, P, Q), boxes (B, P, 4) normalised cxcywh, objectness (B, P) logits or None.
        """
        if text_embeds is None:
            text_embeds = self.encode_text(input_ids, attention_mask)
        table = text_embeds if self.prompts is None else torch.cat([self.prompts.to(text_embeds), text_embeds])
        feature_map = self.model.image_embedder(pixel_values=pixel_values)[0]
        b, h, w, d = feature_map.shape
        feats = feature_map.reshape(b, h * w, d)
        boxes = self.model.box_predictor(feats, feature_map)
        logits, _ = self.model.class_predictor(feats, table[query_index].to(feats.dtype), query_mask)
        objectness = self.model.objectness_predictor(feats) if hasattr(self.model, "objectness_head") else None
        return logits, boxes, objectness


class TextSide:
    """Prompts -> token tensors, and (with a frozen text tower) embeddings cached per prompt."""

    def __init__(self, module: OwlTrainModule, processor, device: torch.device, frozen: bool):
        self.module, self.processor, self.device, self.frozen = module, processor, device, frozen
        self.context = module.model.config.text_config.max_position_embeddings
        self.cache: dict[str, torch.Tensor] = {}

    def tokens(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, L) input ids and attention mask, padded to the text tower's context (as
        `OwlBackend.encode_text` pads)."""
        tok = self.processor.tokenizer(list(prompts), padding="max_length", max_length=self.context, truncation=True,
                                       return_tensors="pt")
        return tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)

    @torch.no_grad()
    def embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """(U, D) fp32 embeddings of a frozen tower, computed once per prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if missing:
            ids, mask = self.tokens(missing)
            for p, e in zip(missing, self.module.encode_text(ids, mask).float()):
                self.cache[p] = e
        return torch.stack([self.cache[p] for p in prompts])


class InputFrame:
    """The model's input geometry: pixels for a batch of images, and boxes normalised to it.

    OWLv2 pads the image to a square at the bottom and right before resizing, so its boxes are
    relative to the padded square of side max(h, w); OWL-ViT v1 stretches the image, so its
    boxes are relative to the image itself (as `OwlBackend.to_pixels` undoes)."""

    def __init__(self, processor, device: torch.device):
        from ..backends.owlv2_resize import Owlv2Resizer

        self.processor, self.device = processor, device
        ip = processor.image_processor
        self.resizer = Owlv2Resizer(ip) if Owlv2Resizer.supports(ip) else None
        self.pads_to_square = bool(getattr(ip, "do_pad", False))

    def pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 (H, W, 3) arrays -> (B, 3, S, S) float pixel values."""
        if self.resizer is not None:
            return self.resizer(list(images), self.device)
        tensors = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]
        return self.processor.image_processor(images=tensors, return_tensors="pt")["pixel_values"].to(self.device)

    def normalise(self, boxes: np.ndarray, height: int, width: int) -> torch.Tensor:
        """(N, 4) xyxy pixels -> (N, 4) normalised cxcywh in the model's input frame."""
        sw, sh = (max(height, width),) * 2 if self.pads_to_square else (width, height)
        b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) / torch.tensor([sw, sh, sw, sh], dtype=torch.float32)
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
        return cxcywh.clamp(0, 1).to(self.device)


__all__ = ["InputFrame", "OwlTrainModule", "TextSide", "clip_of"]
