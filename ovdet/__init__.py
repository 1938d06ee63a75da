"""ovdet: open-vocabulary object detection on CLIP-family models.

    from ovdet import Detector
    det = Detector.from_pretrained("owlv2-b16")
    dets = det.detect("street.jpg", ["bus", "person", "stroller"])
"""

from .config import DetectorConfig, load_config
from .detector import Detector
from .errors import OvdetError
from .structures import Detections

__version__ = "0.1.0"

__all__ = ["Detector", "Detections", "DetectorConfig", "OvdetError", "load_config", "__version__"]
