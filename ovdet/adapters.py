"""Conversions between `Detections` and other formats: supervision, COCO results, JSON records."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .structures import Detections


def to_supervision(dets: Detections):
    """`supervision.Detections` with confidence, class_id, tracker_id and data['class_name']."""
    import supervision as sv

    data: dict[str, Any] = {"class_name": np.array(dets.labels, dtype=object)}
    if dets.raw_scores is not None:
        data["raw_score"] = dets.raw_scores
    if "uncalibrated_score" in dets.extra:
        data["uncalibrated_score"] = dets.extra["uncalibrated_score"]
    return sv.Detections(
        xyxy=dets.xyxy.copy(),
        confidence=dets.scores.copy(),
        class_id=dets.class_ids.copy(),
        tracker_id=None if dets.tracker_ids is None else dets.tracker_ids.copy(),
        data=data,
    )


def from_supervision(
    sv_dets, class_names: Sequence[str], image_size: tuple[int, int]
) -> Detections:
    """Build `Detections` from a `supervision.Detections` whose class_id indexes `class_names`.

    Missing confidences become 1.0 (e.g. ground-truth boxes); missing class ids are an error
    because there is no honest default.
    """
    n = len(sv_dets)
    if sv_dets.class_id is None and n:
        raise ValueError("supervision.Detections has no class_id; ovdet needs one per box")
    raw = sv_dets.data.get("raw_score") if sv_dets.data else None
    return Detections(
        xyxy=sv_dets.xyxy,
        scores=np.ones(n, np.float32) if sv_dets.confidence is None else sv_dets.confidence,
        class_ids=np.zeros(0, np.int64) if sv_dets.class_id is None else sv_dets.class_id,
        class_names=tuple(class_names),
        image_size=image_size,
        raw_scores=raw,
        tracker_ids=sv_dets.tracker_id,
    )


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
