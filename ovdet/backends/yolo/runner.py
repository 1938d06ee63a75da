"""The shared YOLO image path: letterbox -> forward -> NMS -> boxes in the original pixels.

Runs the ultralytics network (`ultralytics.nn.tasks` modules) directly, without ultralytics'
`Model` / `Predictor` classes: ovdet letterboxes the images as ultralytics' `LetterBox` does
(so the network sees what its own predictor would give it), runs one forward pass per batch,
applies ultralytics' NMS and maps boxes back to the original pixels. That keeps callbacks,
result objects, file writing and the predictor's per-vocabulary set-up out of the way.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ...boxes import clip_to_image
from ...errors import OvdetError

DEFAULT_IMGSZ = 640  # the input side every ultralytics detection checkpoint was trained at


class YoloRunner:
    """Letterbox -> forward -> NMS -> original-image boxes, for a loaded ultralytics model."""

    def __init__(self, model, device: torch.device, imgsz: int = DEFAULT_IMGSZ, half: bool = False):
        self.model = model
        self.device = device
        self.head = model.model[-1]
        self.stride = int(max(int(model.stride.max()) if hasattr(model, "stride") else 32, 32))
        self.imgsz = int(math.ceil(imgsz / self.stride) * self.stride)  # a multiple of the largest stride
        self.half = half and device.type == "cuda"
        if self.half:
            self.model.half()

    @property
    def end2end(self) -> bool:
        return bool(getattr(self.head, "end2end", False))

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 (H, W, 3) images -> (B, 3, S, S') float in [0, 1], RGB, letterboxed.

        Ultralytics' predictor takes BGR arrays (cv2's order) and flips them to RGB before the
        network; the network itself wants RGB, which is what ovdet images already are, so
        they go in without a flip. Same-shape batches get the minimal stride-padded rectangle
        (the predictor's `rect` mode); mixed shapes are padded to imgsz x imgsz squares.
        """
        from ultralytics.data.augment import LetterBox

        same = len({im.shape for im in images}) == 1
        letterbox = LetterBox(new_shape=(self.imgsz, self.imgsz), auto=same, stride=self.stride)
        boxed = [letterbox(image=np.ascontiguousarray(im)) for im in images]
        x = torch.from_numpy(np.stack(boxed)).to(self.device).permute(0, 3, 1, 2).contiguous()
        return x.half().div_(255) if self.half else x.float().div_(255)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor):
        """The network on a preprocessed batch: ultralytics' raw inference output."""
        return self.model(x)

    def postprocess(self, preds, input_shape: Sequence[int], images: Sequence[np.ndarray], conf: float, iou: float,
                    agnostic: bool, max_det: int, multi_label: bool = False) -> list[torch.Tensor]:
        """Raw output -> per image (N, 6) float32 [x1, y1, x2, y2, confidence, class] in the
        original image's pixels (clipped to it), best first: ultralytics' NMS and box scaling,
        called as its detection predictor calls them."""
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes

        while isinstance(preds, (tuple, list)):  # (y, raw) tuples; segment nests ((y, proto), raw)
            preds = preds[0]
        dets = non_max_suppression(
            preds,
            conf_thres=conf,
            iou_thres=iou,
            agnostic=agnostic,
            multi_label=multi_label,  # a box once per class above conf (what AP rewards)
            max_det=max_det,
            nc=int(self.head.nc),  # segment/pose heads carry extra channels after the classes
            end2end=self.end2end,
            max_time_img=60.0,  # past its time budget ultralytics stops NMS, dropping later images
        )
        out = []
        for det, im in zip(dets, images):
            det = det[:, :6].float()
            h, w = im.shape[:2]
            det[:, :4] = clip_to_image(scale_boxes(tuple(input_shape), det[:, :4].clone(), (h, w)), h, w)
            out.append(det)
        return out

    def run(self, images: Sequence[np.ndarray], conf: float, iou: float, agnostic: bool, max_det: int,
            multi_label: bool = False) -> list[torch.Tensor]:
        """RGB images -> per image (N, 6) [x1, y1, x2, y2, confidence, class] (see `postprocess`)."""
        if self.end2end:  # NMS-free heads (YOLOv10, YOLO26) rank their top-k inside the network
            self.head.max_det = max_det
            self.head.agnostic_nms = agnostic
        x = self.preprocess(images)
        return self.postprocess(self.forward(x), x.shape[2:], images, conf, iou, agnostic, max_det, multi_label)


def check_images(images: Sequence[np.ndarray]) -> None:
    for im in images:
        if not (isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8):
            shape = getattr(im, "shape", None)
            raise OvdetError(f"YOLO models take RGB uint8 (H, W, 3) arrays, got {type(im).__name__} {shape}")


__all__ = ["DEFAULT_IMGSZ", "YoloRunner", "check_images"]
