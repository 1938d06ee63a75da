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
    """Letterbox -> forward -> NMS -> original-image boxes, for a loaded ultralytics model.

    `dtype` picks the path the network runs (`path` names it; each was measured against
    fp32 on yolov8s-worldv2, 1280x720 photo, 2-core AVX512-BF16 CPU, see README Performance):
      "fp32"               CPU fp32, NCHW: Conv+BN already folded (`load_yolo_model`); oneDNN's
                           fp32 convolutions gained nothing from channels-last (0.97-1.0x).
      "bf16-channels-last" CPU bf16 (where `precision: auto` picks it: AMX/AVX512-BF16): weights
                           and activations bf16, NHWC (oneDNN's native bf16 layout: 1.7-2.0x
                           fp32, NCHW bf16 1.4-1.6x). The head's DFL expectation and anchor
                           decode run in fp32: bf16 coordinates would step by 2-4 px at 640 px.
      "fp16" / "bf16"      CUDA half precision (ultralytics' `half=True`), NCHW.
    The uint8 image goes to the device as is and is converted once, straight into the layout
    the network wants (permuting NHWC to NCHW *is* channels-last: no extra copy).
    """

    def __init__(self, model, device: torch.device, imgsz: int = DEFAULT_IMGSZ, dtype: torch.dtype = torch.float32):
        self.model = model
        self.device = device
        self.head = model.model[-1]
        self.stride = int(max(int(model.stride.max()) if hasattr(model, "stride") else 32, 32))
        self.imgsz = int(math.ceil(imgsz / self.stride) * self.stride)  # a multiple of the largest stride
        if device.type != "cuda" and dtype != torch.bfloat16:
            dtype = torch.float32  # fp16 convolutions on a CPU are slower than fp32
        self.dtype = dtype
        self.channels_last = device.type == "cpu" and dtype == torch.bfloat16
        self.path = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype] + (
            "-channels-last" if self.channels_last else "")
        if dtype != torch.float32:
            self.model.to(dtype)
            decode_in_fp32(self.head)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

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
        boxed = [letterbox(image=np.ascontiguousarray(im)) for im in images]  # uint8, cv2 resize + pad
        batch = boxed[0][None] if len(boxed) == 1 else np.stack(boxed)  # one image: a view, no copy
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2)  # uint8 NHWC = NCHW channels-last
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(self.dtype, memory_format=fmt).div_(255)  # one pass: layout + dtype (div as ultralytics)

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


def decode_in_fp32(head: torch.nn.Module) -> None:
    """Make a half-precision detection head decode its boxes in fp32.

    Ultralytics' `Detect._inference` turns the box-distribution logits into distances (DFL:
    softmax + expectation over 16 bins) and adds them to the anchor points, in the dtype of its
    inputs. In bf16 (8-bit mantissa) a coordinate near 640 px could only take values 4 px
    apart, and anchors at 1280 px inputs would be rounded. Upcasting the head's outputs first
    keeps the network's precision for the boxes at no measurable cost (a few MB per image).
    Only this model instance is changed (an instance attribute over the class method).
    """
    if getattr(head, "decodes_in_fp32", False) or not hasattr(head, "_inference"):
        return
    inference = head._inference

    def fp32_inference(preds):
        return inference({k: (v.float() if torch.is_tensor(v) else [t.float() for t in v] if isinstance(v, list) else v)
                          for k, v in preds.items()})

    head.dfl.float()  # its fixed 0..15 weights: exact in either dtype, but must match fp32 input
    head._inference = fp32_inference
    head.decodes_in_fp32 = True


def check_images(images: Sequence[np.ndarray]) -> None:
    for im in images:
        if not (isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8):
            shape = getattr(im, "shape", None)
            raise OvdetError(f"YOLO models take RGB uint8 (H, W, 3) arrays, got {type(im).__name__} {shape}")


__all__ = ["DEFAULT_IMGSZ", "YoloRunner", "check_images", "decode_in_fp32"]
