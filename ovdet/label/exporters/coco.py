"""COCO: `coco/<split>.json` with images (width, height), categories, and annotations (bbox
xywh, area, iscrowd 0, score).

Annotations and categories come from supervision's COCO writer functions
(`detections_to_coco_annotations`, `classes_to_coco_categories`: ids 1..C in ontology order).
Its file-level `save_coco_annotations` is not used: it stamps each image with the current
time (the export would differ between identical runs), rejects same-named images from
different folders instead of renaming them, and drops the confidence that reviewers and
`COCO.loadRes` want; so ovdet assembles the file and adds `score`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ...files import write_json
from ..dataset import LabelledImage


def write(images: Sequence[LabelledImage], classes: list[str], folder: Path, model_version: str = "ovdet",
          **_options) -> None:
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
            for ann, score in zip(anns, im.scores.tolist()):
                ann["bbox"] = [round(float(v), 2) for v in ann["bbox"]]
                ann["area"] = round(ann["bbox"][2] * ann["bbox"][3], 2)
                ann["score"] = round(float(score), 5)
                annotations.append(ann)
        payload = {
            "info": {"description": f"auto-labelled by {model_version}", "version": "1.0"},
            "images": coco_images,
            "annotations": json.loads(json.dumps(annotations)),  # plain ints and floats
            "categories": categories,
        }
        write_json(Path(folder) / f"{split}.json", payload, indent=None)
