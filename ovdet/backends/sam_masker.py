"""Masks for any detector's boxes: SAM 2 or SAM (transformers `Sam2Model` / `SamModel` with
their processors), one image embedding per image and all its boxes as one prompt batch.

    masker = SamMasker.load("sam2-hiera-tiny", torch.device("cpu"), torch.float32)
    masks = masker(image, boxes)                    # (N, 4) xyxy pixels -> ovdet Masks (N)
    encoded = masker.encode(image)                  # the image pass, reusable
    masks = masker.segment(encoded, boxes, image.shape[:2])

Per image: `get_image_embeddings` once (`image_passes` counts them), then the boxes go to the
mask decoder as one batch (`input_boxes` nested [image][box][4], `multimask_output=False`),
split only to keep the decoder's per-box copies of the embedding within PROMPT_BYTES. The
low-resolution logits are resized to the image as the processor's `post_process_masks` does
(`ovdet.backends.mask_upsample`: only where a mask can be, so a 20000 x 20000 image needs no
full-size float array) and kept as `Masks` crops.

A `MaskerImage` holds the embedding: `Detector` keeps it with an encoded image, so the same
image asked again with another vocabulary (ovdet serve) is not encoded again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, WeightsNotFoundError
from ..instance_masks import Masks
from ..weights import is_checkpoint_dir, load_checkpoint, locate, looks_like_hub_id
from .mask_upsample import upsample_masks
from .owlv2_resize import reduce_to

# preset name -> hub id (the checkpoints transformers' SAM 2 and SAM documentation names)
PRESETS = {
    "sam2-hiera-tiny": "facebook/sam2.1-hiera-tiny",
    "sam2-hiera-small": "facebook/sam2.1-hiera-small",
    "sam2-hiera-base-plus": "facebook/sam2.1-hiera-base-plus",
    "sam2-hiera-large": "facebook/sam2.1-hiera-large",
    "sam-vit-base": "facebook/sam-vit-base",
    "sam-vit-large": "facebook/sam-vit-large",
    "sam-vit-huge": "facebook/sam-vit-huge",
}
# images above this many pixels are first brought down in bounded memory to twice the model's
# input (the processor would convert the whole image to float: 4.8 GB at 20000 x 20000)
HUGE_PIXELS = 2**24
# the mask decoder copies the image embedding for every box of a batch: at most this much
PROMPT_BYTES = 2**30
MAX_PROMPTS = 256


@dataclass(frozen=True, eq=False)
class MaskerImage:
    """One image's SAM embedding. embeddings: SAM 2's three feature maps (each (1, C, h, w))
    or SAM's (1, 256, 64, 64) map, on the masker's device; input_size: the (h, w) the image
    was resized to inside the model's square (SAM; SAM 2 squashes it to the whole square)."""

    embeddings: Any
    input_size: tuple[int, int]


class SamMasker:
    """SAM 2 / SAM on given boxes. `model`: `Sam2Model` or `SamModel`; `processor` its processor."""

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype = torch.float32, identity: str = ""):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.device, self.dtype, self.identity = device, dtype, identity
        self.sam2 = model.config.model_type == "sam2"
        self.image_passes = 0  # image-encoder passes so far (one per image, whatever the boxes)
        self.prompt_batches = 0  # mask-decoder calls so far

    @classmethod
    def load(cls, spec: str, device: torch.device, dtype: torch.dtype = torch.float32) -> "SamMasker":
        """From a preset name (PRESETS), a checkpoint folder or a hub id, located like every
        checkpoint (`ovdet.weights`); a checkpoint of another kind is a `ConfigError`."""
        from transformers import Sam2Model, SamModel

        from . import model_type_of

        folder = locate_masker(spec)
        kind = model_type_of(folder)
        if kind not in ("sam2", "sam"):
            raise ConfigError(f"--masks {spec}: {folder} holds a {kind or 'unknown'!r} model, not SAM 2 (sam2) or SAM (sam)")
        model, processor, identity = load_checkpoint(folder, Sam2Model if kind == "sam2" else SamModel, "SAM")
        return cls(model, processor, device, dtype, identity)

    # -- the image pass -------------------------------------------------------------------------
    def square(self) -> int:
        """The side of the model's square input (1024 for the public checkpoints)."""
        size = self.processor.image_processor.size
        get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
        return int(get("longest_edge") or get("height"))

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) an image of `height` x `width` takes inside the model's square: all of it
        for SAM 2, the longest side for SAM (its processor's rounding)."""
        side = self.square()
        if self.sam2:
            return side, side
        scale = side / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> MaskerImage:
        """RGB uint8 (H, W, 3) -> its embedding (one image-encoder pass)."""
        h, w = image.shape[:2]
        rh, rw = self.input_size(h, w)
        if h * w > HUGE_PIXELS:  # twice the model's input: the processor's own resize still anti-aliases
            image = reduce_to(image, 2 * rh, 2 * rw)
        elif not image.flags.writeable:  # torch wants writable memory (a decoded file may be read-only)
            image = image.copy()
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        self.image_passes += 1
        embeddings = self.model.get_image_embeddings(pixels.to(self.device, self.dtype))
        return MaskerImage(embeddings, (rh, rw))

    # -- the prompts ----------------------------------------------------------------------------
    def prompt_batch(self, encoded: MaskerImage) -> int:
        """Boxes per mask-decoder call: the decoder holds a copy of the embedding per box."""
        maps = encoded.embeddings if self.sam2 else [encoded.embeddings]
        per_box = 4 * sum(m[0].numel() * m.element_size() for m in maps)
        return int(np.clip(PROMPT_BYTES // max(1, per_box), 1, MAX_PROMPTS))

    def model_boxes(self, boxes: np.ndarray, image_size: tuple[int, int], encoded: MaskerImage) -> torch.Tensor:
        """(N, 4) xyxy pixels of an `image_size` image -> (1, N, 4) boxes in the model's square,
        as the processor scales them."""
        h, w = image_size
        if self.sam2:
            scaled = self.processor(original_sizes=[[h, w]], input_boxes=[boxes.tolist()], return_tensors="pt")
            return scaled["input_boxes"]
        rh, rw = encoded.input_size  # SamProcessor scales in float64 and hands the model float64
        return torch.from_numpy(boxes.astype(np.float64) * np.asarray([rw / w, rh / h] * 2))[None]

    @torch.inference_mode()
    def low_res(self, encoded: MaskerImage, boxes: np.ndarray, image_size: tuple[int, int]) -> torch.Tensor:
        """(N, 4) xyxy pixel boxes -> (N, h, w) float32 low-resolution mask logits on the CPU
        (256 x 256 for the public checkpoints), the mask decoder run once per PROMPT batch."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scaled = self.model_boxes(boxes, image_size, encoded)
        step = self.prompt_batch(encoded)
        out = []
        for start in range(0, len(boxes), step):
            self.prompt_batches += 1
            result = self.model(image_embeddings=encoded.embeddings, input_boxes=scaled[:, start: start + step].to(self.device),
                                multimask_output=False)
            out.append(result.pred_masks[0, :, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros((0, 1, 1))

    def upsample(self, logits: torch.Tensor, encoded: MaskerImage, image_size: tuple[int, int]) -> Masks:
        """(N, h, w) low-resolution logits -> `Masks` of the `image_size` image: SAM 2's
        processor resizes them to the image; SAM's to its padded square first, then crops the
        image's part and resizes that (the first step is small and done by F.interpolate)."""
        if not self.sam2 and len(logits):
            import torch.nn.functional as F

            pad = self.processor.image_processor.pad_size
            side = (pad["height"], pad["width"]) if isinstance(pad, dict) else (pad.height, pad.width)
            rh, rw = encoded.input_size
            parts = [F.interpolate(logits[i: i + 16, None], side, mode="bilinear", align_corners=False)[:, 0, :rh, :rw]
                     for i in range(0, len(logits), 16)]
            logits = torch.cat(parts)
        crops = upsample_masks(logits, image_size)
        return Masks.from_crops([c for c, _, _ in crops], [(y, x) for _, y, x in crops], image_size)

    def segment(self, encoded: MaskerImage, boxes: np.ndarray, image_size: tuple[int, int]) -> Masks:
        """Masks of (N, 4) xyxy `boxes` in pixels of the `image_size` = (H, W) image that
        `encoded` came from (the array encoded may be a reduced copy of it)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if not len(boxes):
            return Masks.empty(image_size)
        return self.upsample(self.low_res(encoded, boxes, image_size), encoded, image_size)

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> Masks:
        """RGB uint8 (H, W, 3) + (N, 4) xyxy pixel boxes -> N masks (no pass at all for N = 0)."""
        if not len(np.asarray(boxes).reshape(-1, 4)):
            return Masks.empty(image.shape[:2])
        return self.segment(self.encode(image), boxes, image.shape[:2])


def locate_masker(spec: str) -> Path:
    """The checkpoint folder of a masker named by preset, folder or hub id (`ovdet.weights`:
    weights/<preset>/, $OVDET_WEIGHTS, the hub cache, a download unless HF_HUB_OFFLINE)."""
    spec = str(spec)
    if spec in PRESETS:
        name, weights = spec, PRESETS[spec]
    elif is_checkpoint_dir(Path(spec).expanduser()) or looks_like_hub_id(spec):
        name, weights = "", spec
    else:
        raise ConfigError(f"--masks {spec!r}: not a SAM preset ({', '.join(PRESETS)}), a checkpoint folder "
                          "or a hub id")
    try:
        return locate(name, weights).path
    except WeightsNotFoundError as exc:
        where = f"weights/{name}/" if name else "a folder"
        raise WeightsNotFoundError(f"no SAM checkpoint for --masks {spec} on this machine: put a save_pretrained folder "
                                   f"of {weights} at {where} (or pass --masks a folder)", details=exc.details) from None


__all__ = ["HUGE_PIXELS", "PRESETS", "MaskerImage", "SamMasker", "locate_masker"]
