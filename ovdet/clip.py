"""CLIP through transformers: text embeddings, image/crop embeddings and dense patch tokens.

All embeddings returned here are in CLIP's joint space and unit length (fp32), so a cosine
similarity is a plain matrix product. The towers run in the configured precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .runtime import fast_vision_tower, fuse_on_cpu, lower_precision
from .weights import load_checkpoint

TEXT_BATCH = 256  # prompts per text-tower pass: bounds memory for 1,203-class x 8-template runs


class ClipModel:
    """A transformers `CLIPModel` with its processor, on one device."""

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype = torch.float32, identity: str = "",
                 compile: bool = False):
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.identity = identity or model.config.name_or_path
        vision = model.config.vision_config
        self.image_size: int = vision.image_size
        self.patch_size: int = vision.patch_size
        towers = [model.vision_model, model.text_model, model.visual_projection, model.text_projection]
        lower_precision(towers, dtype)
        model.vision_model = fast_vision_tower(model.vision_model, device, dtype, compile)
        fuse_on_cpu(model.text_model, device, dtype)

    @classmethod
    def load(cls, path: str | Path, device: torch.device, dtype: torch.dtype, compile: bool = False) -> "ClipModel":
        from transformers import CLIPModel

        model, processor, identity = load_checkpoint(Path(path), CLIPModel, "CLIP")
        return cls(model, processor, device, dtype, identity=identity, compile=compile)

    @classmethod
    def from_config(cls, config, device: torch.device | None = None, dtype: torch.dtype | None = None,
                    compile: bool | None = None) -> "ClipModel":
        """The CLIP checkpoint a config's `weights` name (found as `ovdet.weights.locate`
        does), on `device` in `dtype`, compiled or not; by default as the config says."""
        from .runtime import resolve_device, resolve_precision
        from .weights import locate

        device = device or resolve_device(config.device)
        dtype = dtype or resolve_precision(config.precision, device)
        compile = config.compile if compile is None else compile
        return cls.load(locate(config.name, config.weights).path, device, dtype, compile=compile)

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature (100 for the OpenAI checkpoints)."""
        return float(self.model.logit_scale.detach().exp())

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(N,) texts -> (N, D) unit embeddings, fp32.

        Texts are batched shortest first, so each batch pads to nearly its own length: for the
        1,203 LVIS names x 12 templates that is 142k tokens through the tower instead of 216k.
        """
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.model.config.projection_dim, device=self.device)
        tokenizer = self.processor.tokenizer
        context = self.model.config.text_config.max_position_embeddings  # the tower's, whatever the tokenizer says
        ids = tokenizer(texts, truncation=True, max_length=context)["input_ids"]  # tokenized once, padded per batch
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        for start in range(0, len(texts), TEXT_BATCH):
            batch = order[start : start + TEXT_BATCH]
            tok = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(self.device)
            feats = self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
            feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
            if start == 0:
                out = torch.empty(len(texts), feats.shape[-1], device=self.device)
            out[torch.tensor(batch, device=self.device)] = F.normalize(feats.float(), dim=-1)
        return out

    def preprocess_square(self, images: Sequence[np.ndarray], size: int | None = None) -> torch.Tensor:
        """Square RGB uint8 (S', S', 3) arrays -> (B, 3, size, size) normalised pixels.

        Inputs are already square (crops are padded to squares), so a direct resize keeps the
        aspect ratio; CLIP's default centre crop would cut the edges of the region.
        """
        size = size or self.image_size
        tensors = [torch.from_numpy(im if im.flags.writeable else im.copy()).permute(2, 0, 1) for im in images]
        tensors = [t.to(self.device) for t in tensors]
        pixel_values = self.processor.image_processor(
            images=tensors, size={"height": size, "width": size}, do_center_crop=False, return_tensors="pt"
        )["pixel_values"]
        return pixel_values.to(self.device)

    @torch.inference_mode()
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) at the model's native size -> (B, D) unit image embeddings, fp32."""
        feats = self.model.get_image_features(pixel_values=pixel_values.to(self.dtype))
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        return F.normalize(feats.float(), dim=-1)

    @torch.inference_mode()
    def dense_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S), any S divisible by the patch size -> (B, D_v, S/p, S/p) patch tokens,
        after the final layer norm, fp32 (position embeddings interpolated when S differs
        from the training size)."""
        b, _, s, _ = pixel_values.shape
        out = self.model.vision_model(pixel_values=pixel_values.to(self.dtype), interpolate_pos_encoding=s != self.image_size)
        tokens = self.model.vision_model.post_layernorm(out.last_hidden_state[:, 1:]).float()
        g = s // self.patch_size
        return tokens.reshape(b, g, g, -1).permute(0, 3, 1, 2).contiguous()

    @torch.inference_mode()
    def project_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, D_v) vision-width features -> (N, D) unit embeddings in the joint space."""
        return F.normalize(self.model.visual_projection(tokens.to(self.dtype)).float(), dim=-1)
