"""Ultralytics YOLO in ovdet, one module per responsibility:

  offline.py   keeping ultralytics offline (environment, download guards)
  files.py     locating, downloading and loading .pt checkpoints
  runner.py    the shared image path: letterbox, forward (fast paths), NMS, box scaling
  proposer.py  any YOLO detector as a class-agnostic proposer
  world.py     the YOLO-World backend on ovdet's CLIP text embeddings

Importing this package does not import ultralytics (each entry point does, offline, on use).
"""

from .files import download_yolo_asset, find_yolo_weights, load_yolo_model
from .offline import BLOCKED_DOWNLOADS, ultralytics_offline
from .proposer import YoloProposer, build_yolo_proposer
from .runner import DEFAULT_IMGSZ, YoloRunner
from .world import DEFAULT_TEXT_WEIGHTS, YoloWorldBackend, build_yolo_world

__all__ = [
    "BLOCKED_DOWNLOADS",
    "DEFAULT_IMGSZ",
    "DEFAULT_TEXT_WEIGHTS",
    "YoloProposer",
    "YoloRunner",
    "YoloWorldBackend",
    "build_yolo_proposer",
    "build_yolo_world",
    "download_yolo_asset",
    "find_yolo_weights",
    "load_yolo_model",
    "ultralytics_offline",
]
