"""The YOLO-World backend (`backend: yolo_world`): ultralytics' `WorldModel` with class
embeddings from ovdet's CLIP text tower.

The backend encodes prompts with a CLIP text tower (OpenAI ViT-B/32 by default, the tower
YOLO-World was trained with) through `ovdet.clip.ClipModel`, and writes the unit embeddings
straight into the model's text features. Ultralytics' own `set_classes` is never called: it
imports the `clip` package (installing it from git when missing) and downloads OpenAI's
ViT-B/32 weights each time the vocabulary changes. Here a new vocabulary costs one (cached)
text embedding and no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...clip import ClipModel
from ...config import DetectorConfig
from ...errors import ConfigError, OvdetError
from ...weights import locate
from ..base import RegionScores
from .files import find_yolo_weights, load_yolo_model
from .offline import ultralytics_offline
from .runner import DEFAULT_IMGSZ, YoloRunner, check_images

DEFAULT_TEXT_WEIGHTS = "openai/clip-vit-base-patch32"  # the text tower YOLO-World was trained with


class YoloWorldBackend:
    """YOLO-World (ultralytics `WorldModel`) with class embeddings from ovdet's CLIP text tower.

    `predict` writes the (C, D) unit class embeddings into the model's text features
    (`txt_feats`, shape (1, C, D)), sets the head's class count and the model's names to
    match, runs the network and ultralytics' NMS, and returns each surviving box with its
    confidence in its class's column (0 elsewhere). The confidences are YOLO-World's own
    sigmoid scores, already in [0, 1]; `raw` holds the same values.

    NMS here uses a low confidence floor (`conf`) so the Detector's threshold, per-class
    thresholds and top-k decide what is reported; `iou` and `agnostic` should match the config.
    """

    def __init__(self, model, text: ClipModel, device: torch.device, conf: float = 0.001, iou: float = 0.7,
                 agnostic: bool = False, max_det: int = 300, imgsz: int = DEFAULT_IMGSZ, half: bool = False,
                 weights: str = "", multi_label: bool = False):
        ultralytics_offline()
        from ultralytics.nn.tasks import WorldModel

        if not isinstance(model, WorldModel):
            raise ConfigError(
                f"{weights or 'the model'} is not a YOLO-World model (it has a fixed class list); "
                f"use it as a proposer (backend: clip, proposer: yolo) or pick a yolov8*-worldv2.pt file"
            )
        self.embed_dim = int(model.txt_feats.shape[-1]) if torch.is_tensor(getattr(model, "txt_feats", None)) else 512
        text_dim = int(text.model.config.projection_dim)
        if text_dim != self.embed_dim:
            raise ConfigError(
                f"text_weights give {text_dim}-d text embeddings but YOLO-World takes {self.embed_dim}-d; "
                f"use {DEFAULT_TEXT_WEIGHTS} (the text tower YOLO-World was trained with)"
            )
        self.model = model
        self.text = text
        self.device = device
        self.identity = text.identity  # the text tower alone decides the class embeddings
        self.conf, self.iou, self.agnostic, self.max_det = float(conf), float(iou), bool(agnostic), int(max_det)
        self.multi_label = bool(multi_label)
        self.runner = YoloRunner(model, device, imgsz, half)
        self._text_set: torch.Tensor | None = None  # the class embeddings now in the model

    @classmethod
    def load(cls, weights: Path, text_weights: Path, device: torch.device, dtype: torch.dtype, **kwargs) -> "YoloWorldBackend":
        """Load a YOLO-World .pt file and a CLIP checkpoint folder (the text tower)."""
        text = ClipModel.load(text_weights, device, dtype)
        model = load_yolo_model(Path(weights), device)
        # the CNN runs fp32 (ultralytics' default) unless fp16 is asked for on CUDA; bf16 would
        # cost box precision (8-bit mantissa: ~2 px steps at 640 px) for little speed-up
        half = dtype == torch.float16 and device.type == "cuda"
        return cls(model, text, device, half=half, weights=Path(weights).name, **kwargs)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(C,) prompts -> (C, D) unit text embeddings from the CLIP text tower (fp32)."""
        return self.text.encode_text(list(prompts))

    def set_text(self, class_embeds: torch.Tensor) -> None:
        """Make the model detect the classes of `class_embeds` (C, D); free when unchanged."""
        if class_embeds.ndim != 2 or class_embeds.shape[1] != self.embed_dim or len(class_embeds) == 0:
            raise OvdetError(
                f"YOLO-World needs (C, {self.embed_dim}) class embeddings with C >= 1, got {tuple(class_embeds.shape)}"
            )
        previous = self._text_set
        if previous is not None and (previous is class_embeds or (
            previous.shape == class_embeds.shape and torch.equal(previous, class_embeds.to(previous.device))
        )):
            return
        feats = F.normalize(class_embeds.detach().float(), dim=-1).to(self.device)
        dtype = next(self.model.parameters()).dtype
        self.model.txt_feats = feats[None].to(dtype)  # (1, C, D): what WorldModel.predict reads
        self.model.model[-1].nc = len(feats)  # the head splits its output by nc
        self.model.names = {i: f"class{i}" for i in range(len(feats))}
        self._text_set = class_embeds.detach().clone()

    def predict(self, images: Sequence[np.ndarray], class_embeds: torch.Tensor, boxes=None) -> list[RegionScores]:
        if boxes is not None:
            raise OvdetError("YOLO-World predicts its own boxes; to score given boxes use a CLIP preset (backend: clip)")
        check_images(images)
        self.set_text(class_embeds)
        c = len(class_embeds)
        dets = self.runner.run(images, self.conf, self.iou, self.agnostic, self.max_det, self.multi_label) if images else []
        out = []
        for det, im in zip(dets, images):
            h, w = im.shape[:2]
            scores = torch.zeros((len(det), c), dtype=torch.float32, device=det.device)
            scores[torch.arange(len(det), device=det.device), det[:, 5].long()] = det[:, 4].clamp(0, 1)
            out.append(RegionScores(boxes=det[:, :4].contiguous(), scores=scores, raw=scores.clone(), image_size=(h, w)))
        return out


def build_yolo_world(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> YoloWorldBackend:
    """The "yolo_world" backend of a config: `weights` (.pt), `text_weights` (CLIP folder or hub id)."""
    path = find_yolo_weights(cfg.weights, preset=cfg.name)
    text_path = locate("", cfg.text_weights or DEFAULT_TEXT_WEIGHTS).path
    return YoloWorldBackend.load(
        path, text_path, device, dtype,
        iou=cfg.nms_iou, agnostic=cfg.class_agnostic_nms, max_det=max(cfg.max_detections, 300),
        multi_label=cfg.multi_label,
    )


__all__ = ["DEFAULT_TEXT_WEIGHTS", "YoloWorldBackend", "build_yolo_world"]
