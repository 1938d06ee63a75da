"""Label Studio: `labelstudio/tasks.json` (tasks with pre-annotations) and `config.xml` (the
labelling interface those pre-annotations fit: an Image named "image" and RectangleLabels
named "label").

Each task is {"data": {"image": URL, "split": ...}, "predictions": [{"model_version",
"score", "result": [...]}]}; a result region is a "rectanglelabels" value with x, y, width,
height in percent of the image, `original_width` / `original_height` and its own `score`
(Label Studio's documented import format for predictions). Images are referenced through
Label Studio's local-files server, `/data/local-files/?d=<path under the document root>`:
start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to `labelstudio_root` (default "/").
Neither supervision nor pycocotools writes this format.

With masks each region is the mask instead of the box: a "brushlabels" value {"format": "rle",
"rle": [bytes], "brushlabels": [class]} (Label Studio's brush RLE, see `brush`), or with
mask_format="polygon" a "polygonlabels" value {"points": [[x%, y%], ...], "closed": true,
"polygonlabels": [class]} (one ring per object, `polygons.mask_ring`; the box's corners for a
mask too small for a polygon); config.xml then has BrushLabels or PolygonLabels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from ...files import write_json
from ..dataset import LabelledImage
from .brush import brush_rle
from .polygons import box_ring, mask_ring

# the labelling tag of each kind of region: boxes, brush masks, polygon masks
TAGS = {"rectanglelabels": "RectangleLabels", "brushlabels": "BrushLabels", "polygonlabels": "PolygonLabels"}


def image_url(path: str, root: str = "/") -> str:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel.startswith(".."):
        raise ValueError(f"{path} is not under the Label Studio document root {root}")
    return "/data/local-files/?d=" + quote(Path(rel).as_posix())


def region_kind(images: Sequence[LabelledImage], mask_format: str = "rle") -> str:
    """The result type of the export: boxes, or masks as brush or polygon regions."""
    if not any(im.masks is not None for im in images):
        return "rectanglelabels"
    return "polygonlabels" if mask_format == "polygon" else "brushlabels"


def region_value(im: LabelledImage, i: int, label: str, kind: str) -> dict:
    """The `value` of detection i's region of `kind`, coordinates in percent of the image."""
    w, h = float(im.width), float(im.height)
    if kind == "brushlabels":
        masks = im.masks
        return {"format": "rle", "rle": brush_rle(masks.crops[i], tuple(masks.origins[i].tolist()), masks.image_size),
                "brushlabels": [label]}
    if kind == "polygonlabels":
        ring = mask_ring(im.masks, i)
        ring = box_ring(im.xyxy[i]) if ring is None else ring
        points = [[round(100 * px / w, 4), round(100 * py / h, 4)] for px, py in ring.tolist()]
        return {"points": points, "closed": True, "polygonlabels": [label]}
    x1, y1, x2, y2 = im.xyxy[i].tolist()
    return {"x": round(100 * x1 / w, 4), "y": round(100 * y1 / h, 4), "width": round(100 * (x2 - x1) / w, 4),
            "height": round(100 * (y2 - y1) / h, 4), "rotation": 0, "rectanglelabels": [label]}


def task(im: LabelledImage, classes: Sequence[str], model_version: str, root: str = "/",
         kind: str = "rectanglelabels") -> dict:
    result = []
    for i, (score, cid) in enumerate(zip(im.scores.tolist(), im.class_ids.tolist())):
        result.append({
            "id": f"r{i}", "type": kind, "from_name": "label", "to_name": "image",
            "original_width": im.width, "original_height": im.height, "image_rotation": 0,
            "value": region_value(im, i, classes[cid], kind),
            "score": round(float(score), 5),
        })
    # the task's score orders Label Studio's "review the least confident first": the weakest box
    overall = round(min(im.scores.tolist()), 5) if len(im.scores) else 0.0
    return {"data": {"image": image_url(im.path, root), "split": im.split, "ovdet_path": im.path},
            "predictions": [{"model_version": model_version, "score": overall, "result": result}]}


def config_xml(classes: Sequence[str], kind: str = "rectanglelabels") -> str:
    labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
    tag = TAGS[kind]
    return ("<View>\n  <Image name=\"image\" value=\"$image\"/>\n"
            f"  <{tag} name=\"label\" toName=\"image\">\n{labels}\n  </{tag}>\n</View>\n")


def write(images: Sequence[LabelledImage], classes: list[str], folder: Path, model_version: str = "ovdet",
          labelstudio_root: str = "/", mask_format: str = "rle", **_options) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kind = region_kind(images, mask_format)
    # brush RLEs are long byte lists: one line each, not one line a byte
    write_json(folder / "tasks.json", [task(im, classes, model_version, labelstudio_root, kind) for im in images],
               indent=None if kind == "brushlabels" else 1)
    (folder / "config.xml").write_text(config_xml(classes, kind), encoding="utf-8")
