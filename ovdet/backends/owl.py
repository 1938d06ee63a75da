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

Image exemplars (`embed_exemplars`): the exemplar image goes through the same image tower and
heads; one of its patch tokens' class embeddings becomes the class's query, chosen by
`select_query_token` (transformers' `embed_image_query` rule, with the user's box), and the
class head scores target tokens against it exactly as against a text embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou

from ..boxes import clip_to_image, cxcywh_to_xyxy, scale_normalized
from ..errors import ConfigError, OvdetError
from ..runtime import fast_vision_tower, fuse_on_cpu, lower_hidden_layers, lower_precision
from ..learned import load_learned
from ..weights import load_checkpoint
from ..scoring import Scorer
from .base import RegionScores, StoredRegions
from .owlv2_resize import Owlv2Resizer, output_size, reduce_to


# above this, OWL-ViT's processor would make float copies of hundreds of MB
HUGE_PIXELS = 2**24


# tokens whose predicted box has at least this fraction of the best IoU with the query box are
# candidates for the query embedding (OWL-ViT's image-conditioned rule, as in transformers)
QUERY_IOU_FRACTION = 0.8


def select_query_token(boxes: torch.Tensor, class_embeds: torch.Tensor, query: torch.Tensor) -> int:
    """The patch token of an exemplar image whose class embedding stands for the query box.

    Args:
        boxes: (P, 4) the box head's normalised cxcywh boxes on the exemplar image.
        class_embeds: (P, D) the class head's token embeddings (not normalised).
        query: (4,) the query box, normalised xyxy in the same frame as `boxes`.
    Returns:
        Among the tokens whose box IoU with the query is at least 80 % of the best (generalised
        IoU when no box overlaps the query), the one whose class embedding is least similar to
        the mean class embedding of the image: the most specific of the tokens on the object.
    """
    pred = cxcywh_to_xyxy(boxes.float())
    query = query.to(pred)[None]
    ious = box_iou(query, pred)[0]
    if not bool((ious > 0).any()):
        ious = generalized_box_iou(query, pred)[0]
    best = ious.max()
    # "within 80 % of the best", written best - 20 % of |best|: the same as best * 0.8 for IoUs,
    # and for a negative best GIoU it still keeps the nearest boxes (best * 0.8 > best keeps none)
    keep = (ious >= best - (1.0 - QUERY_IOU_FRACTION) * best.abs()).nonzero()[:, 0]
    mean = class_embeds.float().mean(dim=0)
    return int(keep[(class_embeds[keep].float() @ mean).argmin()])


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
        # exemplar embeddings depend on the image tower and heads, in their precision
        self.exemplar_identity = f"owl-exemplar|{self.identity}|{str(dtype).replace('torch.', '')}"
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
        # {casefolded name: (D,) embedding} a prompt-tuned checkpoint carries (`ovdet.learned`)
        self.learned_classes: dict[str, torch.Tensor] | None = None

    @classmethod
    def load(cls, path: str | Path, device: torch.device, dtype: torch.dtype, compile: bool = False,
             objectness_weight: float = 0.0) -> "OwlBackend":
        """Load a checkpoint folder (hub snapshot or `save_pretrained` output)."""
        from transformers import AutoModelForZeroShotObjectDetection

        model, processor, identity = load_checkpoint(Path(path), AutoModelForZeroShotObjectDetection, "OWL")
        backend = cls(model, processor, device, dtype, identity=identity, compile=compile,
                      objectness_weight=objectness_weight)
        learned = load_learned(path)
        if learned is not None:
            backend.learned_classes = {name: e.to(device) for name, e in learned.items()}
        return backend

    @property
    def name(self) -> str:
        return self.model.config.model_type

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(C,) prompts -> (C, D) text embeddings (projected, not normalised; the class head
        normalises them)."""
        # padded to the text tower's own context (16 for OWL), not the tokenizer's model_max_length,
        # which a checkpoint may lack (transformers then pads nothing and ragged prompts fail)
        context = self.model.config.text_config.max_position_embeddings
        tok = self.processor.tokenizer(
            list(prompts), padding="max_length", max_length=context, truncation=True, return_tensors="pt"
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

    def exemplar_query(self, box: Sequence[float] | None, height: int, width: int) -> torch.Tensor:
        """(4,) the exemplar box (xyxy pixels of a `height` x `width` image; None = all of it),
        normalised in the model's input frame: OWLv2's padded square, OWL-ViT's stretched image."""
        if box is None:
            box = (0.0, 0.0, float(width), float(height))
        side_w, side_h = (max(height, width),) * 2 if self.pads_to_square else (width, height)
        x1, y1, x2, y2 = box
        return torch.tensor([x1 / side_w, y1 / side_h, x2 / side_w, y2 / side_h])

    @torch.inference_mode()
    def embed_exemplars(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[float] | None]) -> torch.Tensor:
        """(N,) RGB uint8 exemplar images + (N,) xyxy pixel boxes (None = the whole image) ->
        (N, D) unit query embeddings, in the space of `encode_text`'s (normalised) embeddings.

        One image-tower pass for the batch. With a box, the token is `select_query_token`'s;
        for a whole image OWLv2 takes its most object-like token (objectness head), as
        transformers' `Owlv2ForObjectDetection.embed_image_query` does, and OWL-ViT v1 the
        whole-image box (its `embed_image_query`)."""
        feats, pred = self.image_features(self.preprocess(images))
        _, class_embeds = self.model.class_predictor(feats)
        class_embeds = class_embeds.float()
        chosen = []
        for i, (image, box) in enumerate(zip(images, boxes)):
            if box is None and hasattr(self.model, "objectness_predictor"):
                index = int(self.model.objectness_predictor(feats[i]).float().argmax())
            else:
                index = select_query_token(pred[i], class_embeds[i], self.exemplar_query(box, *image.shape[:2]))
            chosen.append(class_embeds[i, index])
        return F.normalize(torch.stack(chosen), dim=-1)

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

    # -- stored regions (`ovdet index`): the class head split at the dot product --------------
    # The head's logit is (cos(e, q) + shift) * scale with e, shift and scale from the image
    # token alone; stored as v = [scale * e, scale * shift] and queried with [q, 1], v . [q, 1]
    # is that logit exactly, so one dot product (an ANN index's metric) ranks by it.
    @torch.inference_mode()
    def region_rows(self, features: OwlImageFeatures, keep: int) -> StoredRegions:
        """One image's `encode_images` features -> its `keep` most object-like regions (OWLv2:
        objectness head; OWL-ViT v1 has none: the tokens least like the image's mean class
        embedding, `select_query_token`'s notion of specific) as `StoredRegions` with
        E = D + 1. Tokens whose clipped box is empty (OWLv2's padding) are left out."""
        head = self.model.class_head
        feats = features.feats
        embeds = head.dense0(feats)  # the same layers and order as the head's forward
        embeds = embeds / (torch.linalg.norm(embeds, dim=-1, keepdim=True) + 1e-6)
        shift = head.logit_shift(feats)
        scale = head.elu(head.logit_scale(feats)) + 1
        vectors = torch.cat([embeds * scale, shift * scale], dim=-1).float()
        objectness = None
        if hasattr(self.model, "objectness_predictor"):
            objectness = torch.sigmoid(self.model.objectness_predictor(feats).float())
            rank = objectness
        else:
            rank = -(embeds.float() @ embeds.float().mean(dim=0))
        b = features.boxes
        rank = torch.where((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]), rank, torch.full_like(rank, -torch.inf))
        top = rank.topk(min(keep, int(torch.isfinite(rank).sum()))).indices
        mean = F.normalize(embeds.float().mean(dim=0), dim=0)
        return StoredRegions(vectors[top], b[top].float(), None if objectness is None else objectness[top],
                             torch.cat([mean, mean.new_zeros(1)]), features.image_size)

    def query_vectors(self, class_embeds: torch.Tensor) -> torch.Tensor:
        """(C, D) class embeddings -> (C, D + 1) queries for `region_rows`'s vectors: the
        head's normalisation, then 1 for the shift."""
        q = class_embeds.float()
        q = q / (torch.linalg.norm(q, dim=-1, keepdim=True) + 1e-6)
        return torch.cat([q, q.new_ones(len(q), 1)], dim=1)

    @torch.inference_mode()
    def score_rows(self, vectors: torch.Tensor, objectness: torch.Tensor | None,
                   class_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D + 1) stored vectors, (N,) objectness + (C, D) class embeddings -> (N, C)
        scores and (N, C) logits, as `score` gives them for the same regions."""
        logits = vectors.float() @ self.query_vectors(class_embeds).T
        obj = objectness if self.scorer.objectness_weight else None
        return self.scorer.fuse(torch.sigmoid(logits), obj), logits
