"""Proposer + CLIP region scoring: boxes from a class-agnostic proposer, named by CLIP.

Two ways to embed regions:
  - "crop": each box is cut out as a square (enlarged by `crop_context`, padded with CLIP's
    mean colour where it leaves the image), resized to CLIP's input and run through the image
    tower in batches. Most faithful to how CLIP was trained; cost grows with the box count.
  - "pooled": one dense pass over the whole image (padded to a square, at `dense_size`), then
    RoIAlign over the patch-token grid and CLIP's visual projection. One forward pass per
    image whatever the number of boxes; coarser, since patch tokens were not trained to be
    projected on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torchvision.ops import roi_align

from ..clip import ClipModel
from ..config import DetectorConfig
from ..errors import ConfigError, OvdetError
# crop geometry lives in the torch-free ovdet.geometry (the ONNX runtime shares it); re-exported here
from ..geometry import CLIP_MEAN_RGB, pad_to_square, square_crops, square_geometry  # noqa: F401
from ..proposers import OwlObjectnessProposer, Proposals, Proposer, WindowProposer
from ..scoring import Scorer
from ..weights import locate
from .base import RegionScores, StoredRegions

CROP_BATCH = 64  # crops per image-tower pass


@dataclass(frozen=True)
class RegionFeatures:
    """One image's regions, embedded (what `ClipRegionBackend.encode_images` returns).

    proposals: boxes (N, 4) xyxy pixels + objectness (N,); embeds: (N, D) unit CLIP region
    embeddings; image_size: (height, width).
    """

    proposals: Proposals
    embeds: torch.Tensor
    image_size: tuple[int, int]


class ClipRegionBackend:
    """Scores proposer boxes (or given boxes) against class embeddings with CLIP."""

    def __init__(
        self,
        clip: ClipModel,
        proposer: Proposer | None,
        scorer: Scorer,
        region_mode: str = "crop",
        crop_context: float = 1.2,
        dense_size: int = 448,
    ):
        if region_mode not in ("crop", "pooled"):
            raise ConfigError(f"region_mode must be crop or pooled, got {region_mode!r}")
        if region_mode == "pooled" and dense_size % clip.patch_size:
            raise ConfigError(f"dense_size {dense_size} must be a multiple of the patch size {clip.patch_size}")
        self.clip = clip
        self.proposer = proposer
        self.scorer = scorer
        self.region_mode = region_mode
        self.crop_context = crop_context
        self.dense_size = dense_size
        self.device = clip.device
        self.identity = clip.identity
        # an exemplar is embedded as a region: the key holds what changes a region's embedding
        self.exemplar_identity = (f"clip-exemplar|{clip.identity}|{str(clip.dtype).replace('torch.', '')}|{region_mode}|"
                                  + (f"{crop_context}" if region_mode == "crop" else f"{dense_size}"))

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.clip.encode_text(prompts)

    # -- region embeddings --------------------------------------------------------------------
    def embed_crops(self, images: Sequence[np.ndarray], boxes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per image (N_i, 4) xyxy boxes -> per image (N_i, D) unit embeddings; all crops of
        all images go through the tower together, `CROP_BATCH` at a time."""
        crops = [c for image, b in zip(images, boxes) for c in square_crops(image, b, self.crop_context)]
        embeds = []
        for start in range(0, len(crops), CROP_BATCH):
            embeds.append(self.clip.encode_pixels(self.clip.preprocess_square(crops[start : start + CROP_BATCH])))
        flat = torch.cat(embeds) if embeds else torch.zeros(0, self.clip.model.config.projection_dim, device=self.device)
        return list(torch.split(flat, [len(b) for b in boxes]))

    def embed_pooled(self, images: Sequence[np.ndarray], boxes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One dense pass per image; RoIAlign of each box over the (D_v, g, g) token grid.

        A pixel (x, y) of an (H, W) image lands at (x, y) * dense_size / max(H, W) in the
        padded, resized input, i.e. at that / patch_size on the token grid."""
        pixel_values = self.clip.preprocess_square([pad_to_square(im) for im in images], self.dense_size)
        tokens = self.clip.dense_tokens(pixel_values)  # (B, D_v, g, g)
        out = []
        for i, (image, b) in enumerate(zip(images, boxes)):
            scale = self.dense_size / max(image.shape[:2]) / self.clip.patch_size
            # aligned=True: pixel centres at +0.5, so a box covering a whole token maps to it
            pooled = roi_align(
                tokens[i : i + 1], [b.float().to(self.device)], output_size=(2, 2),
                spatial_scale=scale, sampling_ratio=2, aligned=True,
            )  # (N, D_v, 2, 2)
            out.append(self.clip.project_tokens(pooled.mean(dim=(2, 3))))
        return out

    def embed_exemplars(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[float] | None]) -> torch.Tensor:
        """(N,) RGB uint8 exemplar images + (N,) xyxy pixel boxes (None = the whole image) ->
        (N, D) unit embeddings, each box embedded as this backend embeds proposals (its
        `region_mode`), so exemplars and regions are compared like for like."""
        regions = [
            torch.tensor([list(box) if box is not None else [0.0, 0.0, im.shape[1], im.shape[0]]],
                         dtype=torch.float32, device=self.device)
            for im, box in zip(images, boxes)
        ]
        embed = self.embed_crops if self.region_mode == "crop" else self.embed_pooled
        return torch.cat(embed(list(images), regions))

    # -- prediction ---------------------------------------------------------------------------
    def encode_images(self, images: Sequence[np.ndarray], boxes: Sequence[Proposals] | None = None) -> list[RegionFeatures]:
        """Proposals (or the given boxes) and their CLIP embeddings: nothing here depends on the
        vocabulary."""
        if boxes is None:
            if self.proposer is None:
                raise OvdetError("this configuration scores given boxes only (proposer: boxes): pass boxes / --boxes")
            boxes = self.proposer.propose(images)
        embed = self.embed_crops if self.region_mode == "crop" else self.embed_pooled
        region_embeds = embed(images, [p.boxes.to(self.device) for p in boxes])
        return [RegionFeatures(p, e, tuple(im.shape[:2])) for im, p, e in zip(images, boxes, region_embeds)]

    def score(self, features: Sequence[RegionFeatures], class_embeds: torch.Tensor) -> list[RegionScores]:
        """Cosine similarities to (C + K, D) class embeddings -> calibrated scores per region."""
        out = []
        for f in features:
            sims = f.embeds @ class_embeds.T.to(f.embeds.dtype)  # (N, C + K) cosine similarities
            out.append(
                RegionScores(
                    boxes=f.proposals.boxes.to(self.device).float(),
                    scores=self.scorer(sims, f.proposals.objectness.to(self.device)),
                    raw=sims,
                    image_size=f.image_size,
                )
            )
        return out

    def predict(
        self, images: Sequence[np.ndarray], class_embeds: torch.Tensor, boxes: Sequence[Proposals] | None = None
    ) -> list[RegionScores]:
        return self.score(self.encode_images(images, boxes), class_embeds)

    # -- stored regions (`ovdet index`) --------------------------------------------------------
    def region_rows(self, features: RegionFeatures, keep: int) -> StoredRegions:
        """One image's `encode_images` features -> its `keep` proposals of highest objectness
        as `StoredRegions` (E = D: the unit region embeddings; image vector: their mean)."""
        p = features.proposals
        top = p.objectness.float().topk(min(keep, len(p.objectness))).indices
        embeds = features.embeds.float()
        image_vector = torch.nn.functional.normalize(embeds.mean(dim=0), dim=0) if len(embeds) else embeds.new_zeros(embeds.shape[1])
        return StoredRegions(embeds[top.to(embeds.device)], p.boxes[top].float(), p.objectness[top].float(),
                             image_vector, features.image_size)

    def query_vectors(self, class_embeds: torch.Tensor) -> torch.Tensor:
        """(C, D) unit class embeddings -> the same: a region's cosine is its dot product."""
        return class_embeds.float()

    def score_rows(self, vectors: torch.Tensor, objectness: torch.Tensor | None,
                   class_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) stored vectors, (N,) objectness + (C, D) class embeddings -> (N, C) scores
        and cosines, as `score` computes them (in float32 here)."""
        sims = vectors.float() @ self.query_vectors(class_embeds).T
        return self.scorer(sims, objectness), sims


def build_proposer(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> Proposer | None:
    """The proposer a config names; None for "boxes" (regions come with each call)."""
    if cfg.proposer == "owlv2":
        from .owl import OwlBackend

        owl = OwlBackend.load(locate("", cfg.proposer_weights).path, device, dtype, compile=cfg.compile)
        return OwlObjectnessProposer(owl, top_k=cfg.proposals)
    if cfg.proposer == "windows":
        return WindowProposer()
    if cfg.proposer == "yolo":
        from .yolo.proposer import build_yolo_proposer

        return build_yolo_proposer(cfg, device, dtype)
    if cfg.proposer == "boxes":
        return None
    raise ConfigError(f"backend clip needs a proposer (owlv2, yolo, windows or boxes), got {cfg.proposer!r}")


def build_clip_regions(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> ClipRegionBackend:
    if cfg.scoring == "native":
        raise ConfigError("scoring 'native' is for models with their own calibrated heads (OWL); use softmax or sigmoid")
    clip = ClipModel.from_config(cfg, device, dtype)
    scorer = Scorer(
        mode=cfg.scoring,
        logit_scale=cfg.logit_scale or clip.logit_scale,
        background_similarity=cfg.background_similarity,
        objectness_weight=cfg.objectness_weight,
    )
    return ClipRegionBackend(
        clip, build_proposer(cfg, device, dtype), scorer,
        region_mode=cfg.region_mode, crop_context=cfg.crop_context, dense_size=cfg.dense_size,
    )
