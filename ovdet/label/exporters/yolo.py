"""YOLO in ultralytics' layout:

    yolo/data.yaml              train/val(/test): images/<split> (relative), names {id: name}
    yolo/images/<split>/NAME    the source image, linked (or copied), never re-encoded
    yolo/labels/<split>/STEM.txt   "class cx cy w h" normalised, one line a box; empty if none;
                                   with masks "class x1 y1 x2 y2 ..." (ultralytics' segment labels)

Label lines come from supervision (`detections_to_yolo_annotations`). Its dataset-level
`as_yolo` / `save_yolo_annotations` is not used: it decodes every image just for its size
(known here already) and writes images by re-encoding them; its `save_data_yaml` writes no
train/val paths, which ultralytics needs. Without a val split, `val` points at the train
images (ultralytics requires one).

With masks every line is a polygon normalised by the image's width and height: the mask's
outline as one ring (parts joined, `polygons.mask_ring`), or the box's corners for a mask too
small for a polygon (ultralytics reads a dataset as boxes or as segments, never a mix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..dataset import LabelledImage
from .files import place_image
from .polygons import box_ring, mask_ring


def segment_lines(im: LabelledImage) -> list[str]:
    """ "class x1 y1 x2 y2 ..." per detection, normalised to [0, 1]."""
    scale = (float(im.width), float(im.height))
    lines = []
    for i, (box, cid) in enumerate(zip(im.xyxy, im.class_ids.tolist())):
        ring = mask_ring(im.masks, i)
        ring = box_ring(box) if ring is None else ring
        points = (ring / scale).clip(0.0, 1.0).reshape(-1)
        lines.append(f"{cid} " + " ".join(f"{v:.6f}" for v in points))
    return lines


def write(images: Sequence[LabelledImage], classes: list[str], folder: Path, copy_images: bool = False,
          **_options) -> None:
    import yaml
    from supervision.dataset.formats.yolo import detections_to_yolo_annotations

    folder = Path(folder)
    splits = list(dict.fromkeys(im.split for im in images)) or ["train"]
    for split in splits:
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
    for im in images:
        place_image(im.path, folder / "images" / im.split / im.name, copy_images)
        if im.masks is not None:
            lines = segment_lines(im)
        else:
            lines = detections_to_yolo_annotations(detections=im.to_supervision(), image_shape=(im.height, im.width))
        (folder / "labels" / im.split / f"{im.stem}.txt").write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    data = {"train": "images/train", "val": "images/val" if "val" in splits else "images/train"}
    if "test" in splits:
        data["test"] = "images/test"
    data["nc"] = len(classes)
    data["names"] = dict(enumerate(classes))
    # no `path:` key: ultralytics then resolves the relative paths against this file's folder,
    # so the export can be moved as a whole
    (folder / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
