"""Ultralytics YOLO in ovdet, one module per responsibility:

  offline.py   keeping ultralytics offline (environment, download guards)
  files.py     locating, downloading and loading .pt checkpoints
  runner.py    the shared image path: letterbox, forward (fast paths), NMS, box scaling
  proposer.py  any YOLO detector as a class-agnostic proposer
  world.py     the YOLO-World backend on ovdet's CLIP text embeddings

Importing this package does not import ultralytics (each entry point does, offline, on use),
nor torch: its names are imported from their modules on first use, so that finding a weights
file (`ovdet weights list` through files.py) stays a fraction of a second.
"""

import importlib

_HOME = {
    "download_yolo_asset": "files", "find_yolo_weights": "files", "load_yolo_model": "files",
    "BLOCKED_DOWNLOADS": "offline", "ultralytics_offline": "offline",
    "YoloProposer": "proposer", "build_yolo_proposer": "proposer",
    "DEFAULT_IMGSZ": "runner", "YoloRunner": "runner",
    "DEFAULT_TEXT_WEIGHTS": "world", "YoloWorldBackend": "world", "build_yolo_world": "world",
}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_HOME])


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
