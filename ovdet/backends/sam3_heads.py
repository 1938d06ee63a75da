"""SAM 3's prompt-dependent parts, run for many prompts on one image at once.

`Sam3Model.forward` takes one prompt per image row, so detecting C concepts the documented way
runs the whole model C times. Here the image's vision features (computed once) are expanded to
a batch of prompts and go through the geometry encoder (box prompts), DETR encoder, DETR
decoder and scoring head exactly as `forward` runs them; the mask decoder runs later, only for
the kept detections (`ovdet.backends.sam3_masks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .sam3_masks import PromptState

# activation memory one batch of prompts may take (bytes); chunks of prompts are sized to it
MEMORY_BUDGET = 2 * 2**30


@dataclass(frozen=True)
class Sam3Vision:
    """One image's vision features: the FPN levels the detector reads (the model drops the
    coarsest), each (1, D, h, w), with their position encodings."""

    levels: tuple[torch.Tensor, ...]
    positions: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class HeadOutput:
    """B prompts on one image: boxes (B, Q, 4) normalised xyxy; logits (B, Q); presence (B, 1)
    logits; state: what the mask decoder reads (`PromptState`)."""

    boxes: torch.Tensor
    logits: torch.Tensor
    presence: torch.Tensor
    state: PromptState


def prompt_chunk(model, vision: Sam3Vision, itemsize: int) -> int:
    """Prompts per DETR batch within `MEMORY_BUDGET`: per prompt, the encoder's tokens times its
    feed-forward width and a few hidden-size tensors, twice over (inputs and outputs)."""
    tokens = vision.levels[-1].shape[-2] * vision.levels[-1].shape[-1]
    cfg = model.config.detr_encoder_config
    per_prompt = tokens * (cfg.intermediate_size + 8 * cfg.hidden_size) * itemsize * 2
    return max(1, MEMORY_BUDGET // per_prompt)


def mask_chunk(vision: Sam3Vision, itemsize: int) -> int:
    """Prompts per mask-decoder call within `MEMORY_BUDGET`: the pixel decoder holds a few
    copies of the finest level per prompt."""
    finest = vision.levels[0]
    return max(1, MEMORY_BUDGET // (finest[0].numel() * itemsize * 8))


def expand(levels: Sequence[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """(1, ...) tensors -> (batch, ...) views (no copy)."""
    return [t.expand(batch, *t.shape[1:]) for t in levels]


@torch.inference_mode()
def run_heads(model, vision: Sam3Vision, text: torch.Tensor, text_mask: torch.Tensor,
              boxes: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> HeadOutput:
    """B prompts on one image, as `Sam3Model.forward` computes them from `vision_embeds` and
    `text_embeds` (and `input_boxes` / `input_boxes_labels`).

    text: (B, L, D) projected text features; text_mask: (B, L) bool. boxes: (B, N, 4)
    normalised cxcywh box prompts with labels (B, N) int64 (1 positive, 0 negative), or None."""
    batch = text.shape[0]
    levels, positions = expand(vision.levels, batch), expand(vision.positions, batch)
    prompt, prompt_mask = text, text_mask
    if boxes is not None:
        geometry = model.geometry_encoder(box_embeddings=boxes, box_mask=torch.ones_like(labels, dtype=torch.bool),
                                          box_labels=labels, img_feats=levels, img_pos_embeds=positions)
        prompt = torch.cat([text, geometry.last_hidden_state], dim=1)
        prompt_mask = torch.cat([text_mask, geometry.attention_mask], dim=1)
    encoder = model.detr_encoder(vision_features=[levels[-1]], text_features=prompt,
                                 vision_pos_embeds=[positions[-1]], text_mask=prompt_mask)
    decoder = model.detr_decoder(vision_features=encoder.last_hidden_state, text_features=encoder.text_features,
                                 vision_pos_encoding=encoder.pos_embeds_flattened, text_mask=prompt_mask,
                                 spatial_shapes=encoder.spatial_shapes)
    from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid

    hidden = decoder.intermediate_hidden_states[-1]  # (B, Q, D): the last layer's queries
    offsets = model.detr_decoder.box_head(hidden)
    boxes_xyxy = box_cxcywh_to_xyxy((inverse_sigmoid(decoder.reference_boxes[-1]) + offsets).sigmoid())
    logits = model.dot_product_scoring(decoder_hidden_states=hidden[None], text_features=encoder.text_features,
                                       text_mask=prompt_mask)[0, ..., 0]
    state = PromptState(encoder=encoder.last_hidden_state, prompt=prompt, prompt_mask=prompt_mask, queries=hidden)
    return HeadOutput(boxes_xyxy, logits, decoder.presence_logits[-1], state)


@torch.inference_mode()
def decode_masks(model, levels: Sequence[torch.Tensor], state: PromptState, queries: torch.Tensor) -> torch.Tensor:
    """The mask decoder for b prompts of `state` and (b, k, D) of their queries -> (b, k, h, w)
    mask logits at the finest level's resolution (288 x 288 at 1008 px)."""
    return model.mask_decoder(decoder_queries=queries, backbone_features=expand(levels, queries.shape[0]),
                              encoder_hidden_states=state.encoder, prompt_features=state.prompt,
                              prompt_mask=state.prompt_mask).pred_masks
