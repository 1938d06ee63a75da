"""Drawing detections on images and video frames with supervision's annotators."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .adapters import to_supervision
from .structures import Detections


def draw_bgr(image_rgb: np.ndarray, dets: Detections, in_place: bool = False) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> a BGR copy with boxes (xyxy pixels) and "name score" labels.

    supervision draws with OpenCV, whose colours are BGR, and video writers take BGR, so the
    per-frame path converts once (cv2.cvtColor: a reversed-channel view costs ~25x more to
    copy at 1080p). With track ids a box is coloured by its track (the colour follows the
    object) and labelled "#id name score"; unconfirmed tracks (id -1) keep their class colour.

    in_place: callers done with the image allow drawing in its own memory, which is then
    returned holding BGR: no second full-size copy. Taken only where the array is writable
    and C-contiguous (a copy is made otherwise).
    """
    import cv2
    import supervision as sv

    if in_place and image_rgb.flags.writeable and image_rgb.flags.c_contiguous:
        scene = _swap_channels_in_place(image_rgb)
    else:
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


def _swap_channels_in_place(image: np.ndarray) -> np.ndarray:
    """RGB <-> BGR in the array's own memory, in blocks of rows (~16 MB temporaries). OpenCV's
    `cvtColor(..., dst=image)` is not enough: it silently allocates a new full-size output
    for arrays numpy does not own (e.g. ovdet.io's memory-mapped decode of a huge image)."""
    import cv2

    step = max(1, 2**24 // max(1, image.shape[1] * 3))
    for y in range(0, image.shape[0], step):
        block = image[y : y + step]
        np.copyto(block, cv2.cvtColor(block, cv2.COLOR_RGB2BGR))
    return image


def annotate(image_rgb: np.ndarray, dets: Detections) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> an RGB copy with boxes and labels drawn."""
    import cv2

    return cv2.cvtColor(draw_bgr(image_rgb, dets), cv2.COLOR_BGR2RGB)


def save_image(image_rgb: np.ndarray, path: Path) -> None:
    """Write an RGB array; the format follows the suffix (.jpg, .jpeg; PNG otherwise)."""
    import cv2

    save_bgr(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), path)


def save_annotated(image_rgb: np.ndarray, dets: Detections, path: Path, in_place: bool = False) -> None:
    """Draw `dets` on an (H, W, 3) RGB uint8 image and write it to `path` (format from the
    suffix). in_place: the caller is done with the image, which may be drawn on and left
    holding BGR (see `draw_bgr`): a 20000 x 20000 photo then needs no full-size copy besides
    itself (1.2 GB instead of about 5)."""
    save_bgr(draw_bgr(image_rgb, dets, in_place=in_place), path)


def save_bgr(image_bgr: np.ndarray, path: Path) -> None:
    """Write a BGR array as JPEG (quality 95) or PNG, by suffix, through an atomic temporary
    file. OpenCV encodes from the array as it is; PIL would first copy it at 4 bytes a pixel."""
    import cv2

    from .files import atomic_output

    path = Path(path)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    ok, encoded = cv2.imencode(".jpg" if jpeg else ".png", image_bgr,
                               [cv2.IMWRITE_JPEG_QUALITY, 95] if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"cannot encode {path.name} ({image_bgr.shape[1]}x{image_bgr.shape[0]})")
    with atomic_output(path) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(encoded.data)
