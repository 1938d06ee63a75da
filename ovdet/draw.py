"""Drawing detections on images with supervision's annotators."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .adapters import to_supervision
from .structures import Detections


def annotate(image_rgb: np.ndarray, dets: Detections) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> a copy with boxes and "name score" labels drawn."""
    import supervision as sv

    sv_dets = to_supervision(dets)
    # supervision draws with OpenCV, whose colours are BGR: annotate in BGR, return RGB
    scene = np.ascontiguousarray(image_rgb[..., ::-1])
    thickness = max(1, round(min(dets.image_size) / 300))
    scene = sv.BoxAnnotator(thickness=thickness).annotate(scene, sv_dets)
    labels = [f"{name} {score:.2f}" for name, score in zip(dets.labels, dets.scores.tolist())]
    scene = sv.LabelAnnotator(text_scale=max(0.4, thickness * 0.4), text_thickness=thickness).annotate(
        scene, sv_dets, labels=labels
    )
    return np.ascontiguousarray(scene[..., ::-1])


def save_image(image_rgb: np.ndarray, path: Path) -> None:
    """Write an RGB array; the format follows the suffix (.jpg, .png...)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_rgb).save(path)
