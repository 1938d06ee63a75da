"""Any ultralytics YOLO detector as ovdet's class-agnostic proposer (`proposer: yolo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...config import DetectorConfig
from ...errors import ConfigError
from ...proposers import Proposals
from .files import find_yolo_weights, load_yolo_model
from .runner import DEFAULT_IMGSZ, YoloRunner, check_images

PROPOSER_TASKS = ("detect", "segment", "pose")  # heads with axis-aligned boxes + class scores


class YoloProposer:
    """Any ultralytics YOLO detector run class-agnostic: boxes and confidences as proposals.

    All classes are merged (a box's objectness is its best class confidence, in [0, 1]) and
    NMS is class-agnostic, so one object gives one proposal whatever the detector calls it.
    Works with detect, segment and pose checkpoints (their boxes) and NMS-free heads.
    """

    def __init__(self, weights: Path, device: torch.device, conf: float = 0.05, iou: float = 0.6,
                 max_det: int = 100, imgsz: int = DEFAULT_IMGSZ, half: bool = False):
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0 or max_det < 1:
            raise ConfigError(f"YOLO proposer needs conf and iou in [0, 1] and max_det >= 1, got {conf}, {iou}, {max_det}")
        model = load_yolo_model(Path(weights), device)
        task = getattr(model, "task", "detect")
        if task not in PROPOSER_TASKS:
            raise ConfigError(f"{Path(weights).name} is a YOLO {task} model; proposals need a detect, segment or pose model")
        self.weights = Path(weights)
        self.device = device
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.runner = YoloRunner(model, device, imgsz, half)

    def propose(self, images: Sequence[np.ndarray]) -> list[Proposals]:
        """RGB uint8 (H, W, 3) images -> one `Proposals` per image (best first)."""
        if not images:
            return []
        check_images(images)
        dets = self.runner.run(images, self.conf, self.iou, agnostic=True, max_det=self.max_det)
        return [Proposals(boxes=d[:, :4].contiguous(), objectness=d[:, 4].clamp(0, 1).contiguous()) for d in dets]


def build_yolo_proposer(cfg: DetectorConfig, device: torch.device) -> YoloProposer:
    """The "yolo" proposer of a config: `proposer_weights` (a .pt file), `proposals` per image."""
    path = find_yolo_weights(cfg.proposer_weights, preset=cfg.name)
    return YoloProposer(path, device, max_det=cfg.proposals)


__all__ = ["PROPOSER_TASKS", "YoloProposer", "build_yolo_proposer"]
