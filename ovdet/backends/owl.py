"""OWL-ViT (v1) and OWLv2 through transformers: a patch-token ViT head.

One forward pass of the image tower gives, for every patch token, a box and a class embedding;
the text tower gives one embedding per class name. They are computed separately so that:
  - text is encoded once per vocabulary and reused for every image (the Detector caches it);
  - each image is encoded once, whatever the number of classes (the HF pipeline runs the whole
    model once per label).
In reduced precision (bf16/fp16) the ViT towers and the heads' hidden layers run in that
precision; the layers that output box offsets and logit shift/scale, and all the maths after
them, run in fp32 (see `OwlBackend.__init__`). On a CPU in bf16 the image tower also runs
through the fused oneDNN layers of `ovdet.cpu_fused`, and so does the text tower.

Box geometry: OWL-ViT v1 resizes the image to a square (aspect not kept), so its normalised
boxes are relative to the image itself. OWLv2 first pads the image to a square at the bottom
and right, so its boxes are relative to the padded square of side max(h, w). The image
processor's `do_pad` tells which applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..boxes import clip_to_image, cxcywh_to_xyxy, scale_normalized
from ..errors import ConfigError, OvdetError
from ..runtime import fast_vision_tower, fuse_on_cpu, lower_hidden_layers, lower_precision
from ..weights import load_checkpoint
from ..scoring import Scorer
from .base import RegionScores


@dataclass(frozen=True)
class OwlImageFeatures:
    """One image's vocabulary-free OWL features (what `OwlBackend.encode_images` returns).

    feats: (P, D) fp32 per-token class-head inputs; boxes: (P, 4) xyxy pixels of the original
    image, clipped; objectness: (P,) in [0, 1] when the scorer fuses it, else None;
    image_size: (height, width).
    """

    feats: torch.Tensor
    boxes: torch.Tensor
    objectness: torch.Tensor | None
    image_size: tuple[int, int]


class OwlBackend:
    """Wraps `OwlViTForObjectDetection` / `Owlv2ForObjectDetection` and its processor."""

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype = torch.float32, identity: str = "",
                 compile: bool = False, objectness_weight: float = 0.0):
        from .owlv2_resize import cpu_fast

        self.model = model.eval().to(device)
        processor.image_processor = cpu_fast(processor.image_processor)  # OWLv2: 4x faster blur of big photos on CPUs
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.pads_to_square = bool(getattr(processor.image_processor, "do_pad", False))
        # the base CLIP-like model holding the text tower: `.owlvit` or `.owlv2`
        self.clip = getattr(model, "owlv2", None) or model.owlvit
        self.identity = identity or model.config.name_or_path  # names the text tower in cache keys
        # the ViT towers (and the image-embedding layer norm) in `dtype`; so are the hidden
        # layers of the box and objectness MLPs and the class-embedding projection, whose
        # inputs are the bf16 tower's features anyway (3 of 4 head matmuls, 5 % of the CPU
        # forward in fp32). The layers that output box offsets, objectness and the logit
        # shift and scale, the box-bias grid and all the sigmoid/normalise maths stay fp32.
        lower_precision([self.clip.vision_model, self.clip.text_model, self.clip.text_projection, model.layer_norm], dtype)
        lower_hidden_layers(model.box_head, ("dense0", "dense1"), dtype)
        lower_hidden_layers(getattr(model, "objectness_head", None), ("dense0", "dense1"), dtype)
        lower_hidden_layers(model.class_head, ("dense0",), dtype)
        self.clip.vision_model = fast_vision_tower(self.clip.vision_model, device, dtype, compile)
        fuse_on_cpu(self.clip.text_model, device, dtype)
        if objectness_weight and not hasattr(model, "objectness_predictor"):
            raise ConfigError("objectness_weight needs OWLv2's objectness head; OWL-ViT v1 has none")
        # native scores fused with OWLv2's objectness through the shared scorer (0 = off)
        self.scorer = Scorer(objectness_weight=objectness_weight)

    @classmethod
    def load(cls, path: str | Path, device: torch.device, dtype: torch.dtype, compile: bool = False,
             objectness_weight: float = 0.0) -> "OwlBackend":
        """Load a checkpoint folder (hub snapshot or `save_pretrained` output)."""
        from transformers import AutoModelForZeroShotObjectDetection

        model, processor, identity = load_checkpoint(Path(path), AutoModelForZeroShotObjectDetection, "OWL")
        return cls(model, processor, device, dtype, identity=identity, compile=compile,
                   objectness_weight=objectness_weight)

    @property
    def name(self) -> str:
        return self.model.config.model_type

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(C,) prompts -> (C, D) text embeddings (projected, not normalised; the class head
        normalises them)."""
        tok = self.processor.tokenizer(
            list(prompts), padding="max_length", truncation=True, return_tensors="pt"
        ).to(self.device)
        out = self.clip.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        embeds = out.pooler_output if hasattr(out, "pooler_output") else out
        return embeds.float()

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 (H, W, 3) arrays -> (B, 3, S, S) float pixel values on `device`.

        Images go to the processor as uint8 CHW tensors on the target device: no PIL round
        trip, and on CUDA the resizing runs on the GPU.
        """
        tensors = [
            torch.from_numpy(im if im.flags.writeable else im.copy()).permute(2, 0, 1).to(self.device)
            for im in images
        ]
        return self.processor.image_processor(images=tensors, return_tensors="pt")["pixel_values"].to(self.device)

    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> image_feats (B, P, D) fp32 and boxes (B, P, 4) normalised cxcywh."""
        feature_map = self.model.image_embedder(pixel_values=pixel_values.to(self.dtype))[0]
        feature_map = feature_map.float()
        b, h, w, d = feature_map.shape
        feats = feature_map.reshape(b, h * w, d)
        boxes = self.model.box_predictor(feats, feature_map)
        return feats, boxes

    @torch.inference_mode()
    def class_logits(self, feats: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
        """(B, P, D) image feats + (C, D) text embeds -> (B, P, C) logits (the model's own
        learned shift and scale; sigmoid gives its native scores)."""
        queries = class_embeds[None].expand(feats.shape[0], -1, -1)
        mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=feats.device)
        logits, _ = self.model.class_predictor(feats, queries, mask)
        return logits.float()

    def to_pixels(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(P, 4) normalised cxcywh from the box head -> (P, 4) xyxy pixels of the original
        `height` x `width` image, clipped to it (see the module docstring for the geometry)."""
        xyxy = cxcywh_to_xyxy(boxes)
        if self.pads_to_square:
            side = max(height, width)
            px = scale_normalized(xyxy, side, side)
        else:
            px = scale_normalized(xyxy, width, height)
        return clip_to_image(px, height, width)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray], boxes=None) -> list[OwlImageFeatures]:
        """The image tower and box head, once per image whatever the vocabulary."""
        if boxes is not None:
            raise OvdetError("OWL models predict their own boxes; to score given boxes use a CLIP preset (backend: clip)")
        feats, norm_boxes = self.image_features(self.preprocess(images))
        objectness = None
        if self.scorer.objectness_weight:
            objectness = torch.sigmoid(self.model.objectness_predictor(feats).float())
        out = []
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            out.append(OwlImageFeatures(feats[i], self.to_pixels(norm_boxes[i], h, w),
                                        None if objectness is None else objectness[i], (h, w)))
        return out

    def score(self, features: Sequence[OwlImageFeatures], class_embeds: torch.Tensor) -> list[RegionScores]:
        """The class head against (C, D) class embeddings, for features of `encode_images`."""
        if not features:
            return []
        logits = self.class_logits(torch.stack([f.feats for f in features]), class_embeds)
        return [
            RegionScores(boxes=f.boxes, scores=self.scorer.fuse(torch.sigmoid(logits[i]), f.objectness),
                         raw=logits[i], image_size=f.image_size)
            for i, f in enumerate(features)
        ]

    def predict(self, images: Sequence[np.ndarray], class_embeds: torch.Tensor, boxes=None) -> list[RegionScores]:
        return self.score(self.encode_images(images, boxes), class_embeds)
