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

import math
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
from .owlv2_resize import Owlv2Resizer, output_size, reduce_to


# above this, OWL-ViT's processor would make float copies of hundreds of MB
HUGE_PIXELS = 2**24


class OwlBackend:
    """Wraps `OwlViTForObjectDetection` / `Owlv2ForObjectDetection` and its processor."""

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype = torch.float32, identity: str = "",
                 compile: bool = False, objectness_weight: float = 0.0):

        self.model = model.eval().to(device)
        self.processor = processor
        # OWLv2: resize first, pad after, from the uint8 image in bands (bounded memory, and
        # the blur only where it is sampled); other processors run as they are
        self.resizer = Owlv2Resizer(processor.image_processor) if Owlv2Resizer.supports(processor.image_processor) else None
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

        OWLv2 goes through `Owlv2Resizer` (equal to its processor within 1e-4, no float copy
        of the full-resolution image). OWL-ViT images go to the processor as uint8 CHW
        tensors on the target device: no PIL round trip, and on CUDA the resizing runs on the GPU.
        """
        if self.resizer is not None:
            return self.resizer(images, self.device)
        size = output_size(self.processor.image_processor)
        if size is not None:  # OWL-ViT's bicubic resize converts the whole image to float first:
            # huge images are first brought to twice the input in bounded memory (the input
            # then differs from the stock processor's by 0.004 on average, 0.08 at most)
            images = [reduce_to(im, 2 * size[0], 2 * size[1]) if im.shape[0] * im.shape[1] > HUGE_PIXELS else im
                      for im in images]
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

    def decode_size(self, height: int, width: int) -> tuple[int, int] | None:
        """The smallest (h, w) worth decoding a `height` x `width` image at (JPEG draft):
        twice what the processor resizes it to, so that its own anti-aliasing still does the
        last reduction of at least 2x. None = decode at full size."""
        size = output_size(self.processor.image_processor)
        if size is None:
            return None
        if self.pads_to_square:  # OWLv2: the padded square of side max(h, w) goes to the input size
            f = 2 * max(size) / max(height, width)
            return (math.ceil(height * f), math.ceil(width * f)) if f < 1 else None
        needed = (min(height, 2 * size[0]), min(width, 2 * size[1]))  # OWL-ViT: each axis on its own
        return needed if needed != (height, width) else None

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

    def predict(self, images: Sequence[np.ndarray], class_embeds: torch.Tensor, boxes=None) -> list[RegionScores]:
        if boxes is not None:
            raise OvdetError("OWL models predict their own boxes; to score given boxes use a CLIP preset (backend: clip)")
        feats, boxes = self.image_features(self.preprocess(images))
        logits = self.class_logits(feats, class_embeds)
        objectness = None
        if self.scorer.objectness_weight:
            with torch.inference_mode():
                objectness = torch.sigmoid(self.model.objectness_predictor(feats).float())
        out = []
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            out.append(
                RegionScores(
                    boxes=self.to_pixels(boxes[i], h, w),
                    scores=self.scorer.fuse(torch.sigmoid(logits[i]), None if objectness is None else objectness[i]),
                    raw=logits[i],
                    image_size=(h, w),
                )
            )
        return out
