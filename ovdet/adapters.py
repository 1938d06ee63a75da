"""Conversions between `Detections` and other formats: supervision, COCO results, JSON records."""

from __future__ import annotations

from typing import Mapping, Sequence

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
    """COCO results entries: {"image_id", "category_id", "bbox": [x, y, w, h], "score"}.

    `category_ids[class_id]` maps ovdet's class index to the dataset's category id (COCO ids are
    not 0..C-1); without it the class index itself is used.
    """
    out = []
    for (x1, y1, x2, y2), score, cid in zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.class_ids.tolist()):
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[cid]) if category_ids is not None else int(cid),
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(score), 5),
            }
        )
    return out


def to_records(dets: Detections) -> list[dict]:
    """The JSON schema of `ovdet detect`: [{"box": [x1, y1, x2, y2], "score", "class_id",
    "class_name"}], plus "raw_score" (the logit or cosine similarity behind the score) when the
    detections carry one, "uncalibrated_score" (the score before a calibration file mapped it)
    when one was applied, and "track_id" when tracked."""
    records = []
    for i, ((x1, y1, x2, y2), score, cid) in enumerate(
        zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.class_ids.tolist())
    ):
        rec = {
            "box": [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)],
            "score": round(float(score), 5),
            "class_id": int(cid),
            "class_name": dets.class_names[cid],
        }
        if dets.raw_scores is not None:
            rec["raw_score"] = round(float(dets.raw_scores[i]), 5)
        if "uncalibrated_score" in dets.extra:
            rec["uncalibrated_score"] = round(float(dets.extra["uncalibrated_score"][i]), 5)
        if dets.tracker_ids is not None:
            rec["track_id"] = int(dets.tracker_ids[i])
        records.append(rec)
    return records
