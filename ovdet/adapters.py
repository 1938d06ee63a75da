"""Conversions between `Detections` and other formats: supervision, COCO results, JSON records."""

from __future__ import annotations

from typing import Mapping, Sequence

from .records import detection_records
from .structures import Detections


def to_supervision(dets: Detections):
    """`supervision.Detections` with confidence, class_id, tracker_id and data['class_name']
    (same as `dets.to_supervision()`)."""
    return dets.to_supervision()


def from_supervision(sv_dets, class_names: Sequence[str], image_size: tuple[int, int]) -> Detections:
    """`Detections` from a `supervision.Detections` whose class_id indexes `class_names`, for an
    image of `image_size` = (height, width) (same as `Detections.from_supervision`)."""
    return Detections.from_supervision(sv_dets, class_names, image_size)


def to_coco_results(
    dets: Detections, image_id: int, category_ids: Sequence[int] | Mapping[int, int] | None = None
) -> list[dict]:
    """COCO results entries: {"image_id", "category_id", "bbox": [x, y, w, h], "score"}, and
    "segmentation" (COCO compressed RLE {"size": [h, w], "counts": str}) when the detections
    carry masks, so one results file serves box and mask AP.

    `category_ids[class_id]` maps ovdet's class index to the dataset's category id (COCO ids are
    not 0..C-1); without it the class index itself is used.
    """
    rles = None if dets.masks is None else dets.masks.to_rle()
    out = []
    for i, ((x1, y1, x2, y2), score, cid) in enumerate(
        zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.class_ids.tolist())
    ):
        entry = {
            "image_id": int(image_id),
            "category_id": int(category_ids[cid]) if category_ids is not None else int(cid),
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(score), 5),
        }
        if rles is not None:
            entry["segmentation"] = rles[i]
        out.append(entry)
    return out


def to_records(dets: Detections) -> list[dict]:
    """The detections in the JSON schema of `ovdet detect` (see `ovdet.records`: box, score,
    class_id, class_name, and raw_score, uncalibrated_score, track_id, mask ... when present)."""
    return detection_records(dets)
