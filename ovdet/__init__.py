"""ovdet: open-vocabulary object detection on CLIP-family models.

    from ovdet import Detector
    det = Detector.from_pretrained("owlv2-b16")
    dets = det.detect("street.jpg", ["bus", "person", "stroller"])
    dets = det.detect("shelf.jpg", ["bottle", Example("our logo", "logo.png")])  # shown, not named
    for rec in ovdet.stream(det, "street.mp4", ["bus"], track=True): ...  # video, lazily
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The public names load on first use (PEP 562), so `import ovdet` and the CLI's argument and
# vocabulary checks do not pay for importing torch and transformers (seconds).
_EXPORTS = {
    "Detector": "ovdet.detector",
    "Detections": "ovdet.structures",
    "Masks": "ovdet.instance_masks",
    "Example": "ovdet.exemplars",
    "DetectorConfig": "ovdet.config",
    "load_config": "ovdet.config",
    "OvdetError": "ovdet.errors",
    "Index": "ovdet.index.api",  # search an image collection (LanceDB): `ovdet.Index(db).search("forklift")`
    "stream": "ovdet.video",  # video lives above the core: `ovdet.stream(detector, source, classes)`
}

if TYPE_CHECKING:  # for type checkers and IDEs
    from .config import DetectorConfig, load_config
    from .detector import Detector
    from .errors import OvdetError
    from .exemplars import Example
    from .index.api import Index
    from .instance_masks import Masks
    from .structures import Detections
    from .video import stream


# submodules reachable as attributes after a plain `import ovdet` (`ovdet.adapters.to_records`,
# `ovdet.draw.annotate`), imported on first use like the names above
_SUBMODULES = ("adapters", "audit", "boxes", "classify", "clip", "config", "detector", "draw", "errors", "eval",
               "explain", "index", "io", "structures", "text", "video", "weights")


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"ovdet.{name}")
    raise AttributeError(f"module 'ovdet' has no attribute {name!r}")


__all__ = ["Detector", "Detections", "Masks", "Example", "DetectorConfig", "Index", "OvdetError", "load_config", "stream",
           "__version__"]
