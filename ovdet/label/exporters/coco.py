"""COCO: `coco/<split>.json` with images (width, height), categories, and annotations (bbox
xywh, area, iscrowd 0, score).

Annotations and categories come from supervision's COCO writer functions
(`detections_to_coco_annotations`, `classes_to_coco_categories`: ids 1..C in ontology order).
Its file-level `save_coco_annotations` is not used: it stamps each image with the current
time (the export would differ between identical runs), rejects same-named images from
different folders instead of renaming them, and drops the confidence that reviewers and
`COCO.loadRes` want; so ovdet assembles the file and adds `score`.

With masks, each annotation has `segmentation`: COCO compressed RLE ({"size": [h, w], "counts":
str}, as pycocotools encodes it) by default, or with mask_format="polygon" the mask's outer
contours as polygons ([[x1, y1, x2, y2, ...], ...]; a mask too small for a polygon keeps its
RLE). `area` is then the mask's: its pixel count (RLE) or the area pycocotools gives the
polygons, so `COCO.annToMask(ann).sum() == area`. Both are computed from the masks' crops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ...files import write_json
from ...instance_masks import Masks
from ..dataset import LabelledImage

MASK_FORMATS = ("rle", "polygon")


def segmentations(masks: Masks, mask_format: str = "rle") -> list[tuple[dict | list, float]]:
    """(segmentation, area) per mask, COCO style (see the module's docstring)."""
    from pycocotools import mask as mask_utils

    h, w = masks.image_size
    rles = masks.to_rle()
    out = []
    for i, (rle, area) in enumerate(zip(rles, masks.areas.tolist())):
        polygons = masks.to_polygons(i) if mask_format == "polygon" else []
        if polygons:
            # rasterised by pycocotools from the vertices alone (no (H, W) array)
            area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))))
            out.append((polygons, area))
        else:
            out.append((rle, float(area)))
    return out


def write(images: Sequence[LabelledImage], classes: list[str], folder: Path, model_version: str = "ovdet",
          mask_format: str = "rle", **_options) -> None:
    from supervision.dataset.formats.coco import classes_to_coco_categories, detections_to_coco_annotations

    categories = classes_to_coco_categories(classes=classes)
    splits = list(dict.fromkeys(im.split for im in images)) or ["train"]
    ann_id = 1
    # image ids are global (sorted-path order), so the files of several splits can be merged
    image_ids = {im.path: i for i, im in enumerate(images, start=1)}
    for split in splits:
        coco_images, annotations = [], []
        for im in (im for im in images if im.split == split):
            image_id = image_ids[im.path]
            coco_images.append({"id": image_id, "file_name": im.name, "width": im.width, "height": im.height,
                                "path": im.path})
            anns, ann_id = detections_to_coco_annotations(detections=im.to_supervision(), image_id=image_id,
                                                          annotation_id=ann_id)
            segms = segmentations(im.masks, mask_format) if im.masks is not None else [None] * len(anns)
            for ann, score, segm in zip(anns, im.scores.tolist(), segms):
                ann["bbox"] = [round(float(v), 2) for v in ann["bbox"]]
                ann["area"] = round(ann["bbox"][2] * ann["bbox"][3], 2)
                if segm is not None:
                    ann["segmentation"], ann["area"] = segm[0], round(segm[1], 2)
                ann["score"] = round(float(score), 5)
                annotations.append(ann)
        payload = {
            "info": {"description": f"auto-labelled by {model_version}", "version": "1.0"},
            "images": coco_images,
            "annotations": json.loads(json.dumps(annotations)),  # plain ints and floats
            "categories": categories,
        }
        write_json(Path(folder) / f"{split}.json", payload, indent=None)
