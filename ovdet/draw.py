"""Drawing detections on images and video frames: supervision's annotators, or OpenCV alone
where supervision is not installed (the torch-free route of an ONNX export). Masks are drawn
one crop at a time into the scene's own memory (never as an (N, H, W) array)."""

from __future__ import annotations

from dataclasses import dataclass
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
    Line width and label size follow the boxes (`label_style`). Without supervision (the
    torch-free install of an ONNX export) OpenCV draws the same boxes and labels itself.

    in_place: callers done with the image allow drawing in its own memory, which is then
    returned holding BGR: no second full-size copy. Taken only where the array is writable
    and C-contiguous (a copy is made otherwise).
    """
    import cv2

    if in_place and image_rgb.flags.writeable and image_rgb.flags.c_contiguous:
        scene = _swap_channels_in_place(image_rgb)
    else:
        scene = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    return draw_on_bgr(scene, dets)


def draw_on_bgr(scene: np.ndarray, dets: Detections) -> np.ndarray:
    """Draw masks (when set), boxes and labels (as `draw_bgr`) into `scene`, an (H, W, 3) BGR
    uint8 image such as a frame as OpenCV decoded it, in its own memory; returns it. For callers
    that hold the BGR image already (video frames): no channel conversion at all."""
    if not len(dets):
        return scene
    labels = [f"{name} {score:.2f}" for name, score in zip(dets.labels, dets.scores.tolist())]
    colours = dets.class_ids
    if dets.tracker_ids is not None:
        ids = dets.tracker_ids
        colours = np.where(ids >= 0, ids, dets.class_ids)
        labels = [(f"#{tid} " if tid >= 0 else "") + label for tid, label in zip(ids.tolist(), labels)]
    style = label_style(dets)
    try:
        import supervision as sv
    except ImportError:
        if dets.masks is not None:
            draw_masks(scene, dets.masks, colours, annotator=None)
        return _draw_with_opencv(scene, dets.xyxy, labels, colours, style)
    if dets.masks is not None:
        draw_masks(scene, dets.masks, colours, sv.MaskAnnotator(opacity=MASK_OPACITY))
    sv_dets = to_supervision(dets.replace(masks=None))  # boxes and labels: no dense masks
    scene = sv.BoxAnnotator(thickness=style.line).annotate(scene, sv_dets, custom_color_lookup=colours)
    return sv.LabelAnnotator(text_scale=style.text_scale, text_thickness=style.text_thickness,
                             text_padding=style.padding, smart_position=True).annotate(
        scene, sv_dets, labels=labels, custom_color_lookup=colours
    )


MASK_OPACITY = 0.5


def draw_masks(scene: np.ndarray, masks, colours: np.ndarray, annotator=None) -> np.ndarray:
    """Fill each mask of `masks` (ovdet `Masks` of the scene's size) with its colour (index into
    the palette, as `colours`) at MASK_OPACITY, in place, one crop at a time: `annotator` (a
    supervision `MaskAnnotator`) draws into the view of the scene under the crop; without one
    OpenCV-free numpy blending does the same."""
    for crop, (y, x), colour in zip(masks.crops, masks.origins.tolist(), np.asarray(colours).tolist()):
        if not crop.any():
            continue
        view = scene[y: y + crop.shape[0], x: x + crop.shape[1]]
        if annotator is not None:
            import supervision as sv

            h, w = crop.shape
            one = sv.Detections(xyxy=np.asarray([[0, 0, w, h]], np.float32), mask=crop[None],
                                class_id=np.asarray([int(colour)]))
            annotator.annotate(view, one, custom_color_lookup=np.asarray([int(colour)]))
        else:
            rgb = _PALETTE[int(colour) % len(_PALETTE)]
            bgr = np.asarray([int(rgb[4:6], 16), int(rgb[2:4], 16), int(rgb[0:2], 16)], np.float32)
            view[crop] = (view[crop] * (1 - MASK_OPACITY) + bgr * MASK_OPACITY).round().astype(np.uint8)
    return scene


@dataclass(frozen=True)
class LabelStyle:
    line: int  # box outline width, px
    text_scale: float  # OpenCV font scale (Hershey simplex: ~22 px cap height at 1.0)
    text_thickness: int
    padding: int  # px around the label text


def label_style(dets: Detections) -> LabelStyle:
    """Line width and label size from the boxes' typical size, capped by the image's: labels
    about a quarter of the median box side (10 px at least, 1/40 of the image side at most), so
    small boxes on a big aerial photo keep a small label instead of one ~50 px tall that hides
    them."""
    side = float(np.median(np.minimum(dets.xyxy[:, 2] - dets.xyxy[:, 0], dets.xyxy[:, 3] - dets.xyxy[:, 1])))
    image_side = min(dets.image_size)
    line = int(np.clip(round(side / 40), 1, max(1, round(image_side / 300))))
    text_px = float(np.clip(side * 0.25, 10, max(10.0, image_side / 40)))
    scale = text_px / 22
    return LabelStyle(line=line, text_scale=round(scale, 3), text_thickness=max(1, round(scale * 2)),
                      padding=max(2, round(text_px * 0.3)))


# supervision's default palette (RGB), so both drawing routes colour classes alike
_PALETTE = ("A351FB", "FF4040", "FFA1A0", "FF7633", "FFB633", "D1D435", "4CFB12", "94CF1A", "40DE8A",
            "1B9640", "00D6C1", "2E9CAA", "00C4FF", "364797", "6675FF", "0019EF", "863AFF", "530087",
            "CD3AFF", "FF97CA", "FF39C9")


def _draw_with_opencv(scene: np.ndarray, xyxy: np.ndarray, labels: list[str], colours: np.ndarray,
                      style: LabelStyle) -> np.ndarray:
    """Boxes and filled label tags drawn with OpenCV alone (BGR scene, drawn in place)."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    for box, label, colour in zip(xyxy.round().astype(int).tolist(), labels, colours.tolist()):
        rgb = _PALETTE[int(colour) % len(_PALETTE)]
        bgr = (int(rgb[4:6], 16), int(rgb[2:4], 16), int(rgb[0:2], 16))
        x0, y0, x1, y1 = box
        cv2.rectangle(scene, (x0, y0), (x1, y1), bgr, style.line)
        (tw, th), base = cv2.getTextSize(label, font, style.text_scale, style.text_thickness)
        h = th + base + 2 * style.padding
        top = y0 - h if y0 - h >= 0 else y0  # above the box, inside it at the image's top edge
        cv2.rectangle(scene, (x0, top), (x0 + tw + 2 * style.padding, top + h), bgr, -1)
        cv2.putText(scene, label, (x0 + style.padding, top + style.padding + th), font, style.text_scale,
                    (255, 255, 255), style.text_thickness, cv2.LINE_AA)
    return scene


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
