"""Drawing detections on images and video frames with supervision's annotators."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .adapters import to_supervision
from .structures import Detections


def draw_bgr(image_rgb: np.ndarray, dets: Detections) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> a BGR copy with boxes (xyxy pixels) and "name score" labels.

    supervision draws with OpenCV, whose colours are BGR, and video writers take BGR, so the
    per-frame path converts once (cv2.cvtColor: a reversed-channel view costs ~25x more to
    copy at 1080p). With track ids a box is coloured by its track (the colour follows the
    object) and labelled "#id name score"; unconfirmed tracks (id -1) keep their class colour.
    """
    import cv2
    import supervision as sv

    scene = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if not len(dets):
        return scene
    sv_dets = to_supervision(dets)
    labels = [f"{name} {score:.2f}" for name, score in zip(dets.labels, dets.scores.tolist())]
    colours = dets.class_ids
    if dets.tracker_ids is not None:
        ids = dets.tracker_ids
        colours = np.where(ids >= 0, ids, dets.class_ids)
        labels = [(f"#{tid} " if tid >= 0 else "") + label for tid, label in zip(ids.tolist(), labels)]
    thickness = max(1, round(min(dets.image_size) / 300))
    scene = sv.BoxAnnotator(thickness=thickness).annotate(scene, sv_dets, custom_color_lookup=colours)
    return sv.LabelAnnotator(text_scale=max(0.4, thickness * 0.4), text_thickness=thickness).annotate(
        scene, sv_dets, labels=labels, custom_color_lookup=colours
    )


def annotate(image_rgb: np.ndarray, dets: Detections) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> an RGB copy with boxes and labels drawn."""
    import cv2

    return cv2.cvtColor(draw_bgr(image_rgb, dets), cv2.COLOR_BGR2RGB)


def save_image(image_rgb: np.ndarray, path: Path) -> None:
    """Write an RGB array; the format follows the suffix (.jpg, .png...)."""
    from PIL import Image

    from .io import atomic_output

    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    with atomic_output(path) as tmp:
        Image.fromarray(image_rgb).save(tmp, format=fmt)
