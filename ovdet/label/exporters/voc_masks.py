"""Pascal VOC segmentation: `SegmentationObject/STEM.png` and `SegmentationClass/STEM.png`,
and a `<polygon>` per object in the XML.

Both PNGs are 8-bit palette images in VOC's colour map, one value a pixel: 0 background; in
SegmentationObject the instance's number (1 = the first detection of the image's XML, best
score first), in SegmentationClass the class's (1 = the ontology's first class). Where masks
overlap, the better-scored detection is on top. VOC's 255 "void" borders are not drawn. Values
stop at 254 (255 is void): detections (or classes) past 254 are left out of the PNGs.

The XML's `<polygon>` (vertices 1-based, the layout supervision and Roboflow read and write)
holds the mask as one ring (`polygons.mask_ring`), so supervision's VOC reader gets the masks
back from the XML alone; `<segmented>` is 1. Masks are painted from their crops: the only
full-size arrays are the two uint8 PNG canvases.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..dataset import LabelledImage
from .polygons import mask_ring

LAST_VALUE = 254  # 255 is VOC's void


def voc_palette() -> list[int]:
    """VOC's colour map, 256 RGB entries flattened: entry k spreads k's bits over the three
    channels, high bits first (0 black, 1 dark red, 2 dark green, ..., 255 cream)."""
    palette = []
    for k in range(256):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def label_maps(im: LabelledImage) -> tuple[np.ndarray, np.ndarray]:
    """(instances, classes): two (H, W) uint8 maps of the image's masks (see the docstring)."""
    instances = np.zeros((im.height, im.width), np.uint8)
    classes = np.zeros_like(instances)
    masks = im.masks
    n = min(len(masks), LAST_VALUE)
    for i in range(n - 1, -1, -1):  # worst first: the best-scored ends on top
        crop, (y, x) = masks.crops[i], masks.origins[i].tolist()
        if not crop.size:
            continue
        window = (slice(y, y + crop.shape[0]), slice(x, x + crop.shape[1]))
        instances[window][crop] = i + 1
        cid = int(im.class_ids[i]) + 1
        classes[window][crop] = cid if cid <= LAST_VALUE else 0
    return instances, classes


def write_pngs(im: LabelledImage, folder: Path) -> None:
    from PIL import Image

    palette = voc_palette()
    for sub, values in zip(("SegmentationObject", "SegmentationClass"), label_maps(im)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        png = Image.fromarray(values, mode="P")
        png.putpalette(palette)
        png.save(folder / sub / f"{im.stem}.png")


def with_polygons(xml: str, im: LabelledImage) -> str:
    """supervision's VOC XML (one `<object>` per detection, in order) with each mask's ring as
    the object's `<polygon>` and `<segmented>1</segmented>`."""
    root = ET.fromstring(xml)
    root.find("segmented").text = "1"
    for i, obj in enumerate(root.findall("object")):
        ring = mask_ring(im.masks, i)
        if ring is None:
            continue  # a mask too small for a polygon: the box alone, as supervision writes it
        polygon = ET.SubElement(obj, "polygon")
        for k, (px, py) in enumerate(ring + 1.0, start=1):  # VOC pixels are 1-based
            ET.SubElement(polygon, f"x{k}").text = f"{px:.2f}"
            ET.SubElement(polygon, f"y{k}").text = f"{py:.2f}"
    ET.indent(root, "  ")
    return '<?xml version="1.0" ?>\n' + ET.tostring(root, encoding="unicode") + "\n"
