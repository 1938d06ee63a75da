"""The JSON records of ovdet's results, both ways: one schema per kind, written and read here.

Detection (one object):
    {"box": [x1, y1, x2, y2],  original-image pixels, 2 decimals
     "score": float,           in [0, 1], 5 decimals
     "class_id": int,          index into the vocabulary
     "class_name": str,
     optional: "raw_score" (the logit or similarity behind the score), "uncalibrated_score"
     (before a calibration file mapped it), "track_id" (video), "mask" (COCO compressed RLE
     {"size": [h, w], "counts": str}), "polygons" (the mask as COCO polygons [[x1, y1, x2, y2,
     ...], ...] in image pixels, when asked for; read back from "mask" only), and any other
     per-detection field a model adds (`Detections.extra[name]`, written under its own name)}
Image:  {"image": str (path, URL or upload name), "width": int, "height": int,
         "detections": [Detection, ...]}, or {"image": str, "error": str} when unreadable.
Video frame: {"frame": int, "time": float (seconds, 4 decimals), "detections": [Detection, ...]}
Classification: {"image": str, "probabilities": {class name: p}, "top": [{"class_name", "probability"}]}

`ovdet detect --json` writes a list of Image records, `ovdet video --jsonl` one Frame record a
line, `ovdet label` Image records in its shards, `ovdet serve` an Image record per answer.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .errors import OvdetError
from .instance_masks import Masks
from .structures import Detections

BOX_DECIMALS = 2
SCORE_DECIMALS = 5
# Detection keys that map to `Detections` fields; every other key is an extra field
CORE_KEYS = ("box", "score", "class_id", "class_name", "raw_score", "track_id", "mask", "polygons")
MASK_FORMATS = ("rle", "polygon")  # "polygon": the RLE and polygons both
SCORE_LIKE = ("raw_score",)  # rounded as scores


class RecordError(OvdetError, ValueError):
    """A results record does not follow ovdet's schema."""


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> JSON-ready Python values (floats rounded as scores)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, SCORE_DECIMALS)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# -- detections --------------------------------------------------------------------------------
def detection_records(dets: Detections, mask_format: str = "rle") -> list[dict]:
    """`Detections` -> a list of Detection records (best score first, as the detections are).
    Masks are written as "mask" RLE; `mask_format="polygon"` adds "polygons"."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    rles = None if dets.masks is None else dets.masks.to_rle()
    records = []
    for i, ((x1, y1, x2, y2), score, cid) in enumerate(
        zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.class_ids.tolist())
    ):
        rec = {
            "box": [round(x1, BOX_DECIMALS), round(y1, BOX_DECIMALS), round(x2, BOX_DECIMALS), round(y2, BOX_DECIMALS)],
            "score": round(float(score), SCORE_DECIMALS),
            "class_id": int(cid),
            "class_name": dets.class_names[cid],
        }
        if dets.raw_scores is not None:
            rec["raw_score"] = round(float(dets.raw_scores[i]), SCORE_DECIMALS)
        for key, values in dets.extra.items():
            rec[key] = _plain(values[i])
        if dets.tracker_ids is not None:
            rec["track_id"] = int(dets.tracker_ids[i])
        if rles is not None:
            rec["mask"] = rles[i]
            if mask_format == "polygon":
                rec["polygons"] = dets.masks.to_polygons(i)
        records.append(rec)
    return records


def vocabulary_of(records: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The vocabulary that Detection records index: position `class_id` holds `class_name`
    (ids no record uses are named "class_<id>")."""
    names: dict[int, str] = {}
    for rec in records:
        names.setdefault(int(rec["class_id"]), str(rec["class_name"]))
    size = max(names, default=-1) + 1
    return tuple(names.get(i, f"class_{i}") for i in range(size))


def detections_from_records(records: Sequence[Mapping[str, Any]], image_size: tuple[int, int],
                            class_names: Sequence[str] | None = None, source: str = "records") -> Detections:
    """Detection records -> `Detections` for an image of `image_size` = (h, w).

    `class_names`: the vocabulary to index (records are matched to it by `class_name`); None
    takes it from the records' own ids and names (`vocabulary_of`). Fields other than the core
    ones become `Detections.extra` (objects when not numbers); "mask" RLEs become `Detections.masks`.
    """
    try:
        names = tuple(class_names) if class_names is not None else vocabulary_of(records)
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({str(r["class_name"]) for r in records} - set(index))
        if unknown:
            raise RecordError(f"{source}: class {unknown[0]!r} is not in the vocabulary ({', '.join(names[:5])}"
                              f"{' ...' if len(names) > 5 else ''})")
        n = len(records)
        boxes = np.asarray([r["box"] for r in records], np.float32).reshape(n, 4)
        extra_keys = list(dict.fromkeys(k for r in records for k in r if k not in CORE_KEYS))
        extra = {}
        for key in extra_keys:
            if any(key not in r for r in records):
                raise RecordError(f"{source}: {key!r} is given for some detections only")
            values = [r[key] for r in records]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            extra[key] = np.asarray(values, np.float32) if numeric else _objects(values)
        has = lambda key: n > 0 and all(key in r for r in records)  # noqa: E731
        return Detections(
            xyxy=boxes,
            scores=[float(r["score"]) for r in records],
            class_ids=[index[str(r["class_name"])] for r in records],
            class_names=names,
            image_size=image_size,
            raw_scores=[float(r["raw_score"]) for r in records] if has("raw_score") else None,
            tracker_ids=[int(r["track_id"]) for r in records] if has("track_id") else None,
            extra=extra,
            masks=_masks(records, image_size, source) if has("mask") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, RecordError):
            raise
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise RecordError(f"{source}: not a list of ovdet detections ({what})") from None


def _masks(records: Sequence[Mapping[str, Any]], image_size: tuple[int, int], source: str) -> Masks:
    try:
        return Masks.from_rle([r["mask"] for r in records], image_size)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{source}: a mask is not COCO RLE {{'size': [h, w], 'counts': str}} of the "
                          f"image's size ({exc})") from None


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# -- images, frames, classifications -----------------------------------------------------------
def image_record(image: str, dets: Detections, mask_format: str = "rle") -> dict:
    """One image's Image record (`image`: its path, URL or upload name; `mask_format` as in
    `detection_records`)."""
    h, w = dets.image_size
    return {"image": str(image), "width": int(w), "height": int(h),
            "detections": detection_records(dets, mask_format)}


def error_record(image: str, message: str) -> dict:
    """The Image record of an image that could not be read."""
    return {"image": str(image), "error": str(message)}


def detections_from_image_record(record: Mapping[str, Any], class_names: Sequence[str] | None = None,
                                 source: str = "results") -> Detections | None:
    """An Image record -> its `Detections` (None for an error record)."""
    if not isinstance(record, Mapping):
        raise RecordError(f"{source}: an entry is a {type(record).__name__}, not an image record")
    missing = [k for k in ("image", "error") if k not in record] if "error" in record else \
        [k for k in ("image", "width", "height", "detections") if k not in record]
    if missing:
        raise RecordError(f"{source}: an entry has no {missing[0]!r} field (an image record has image, width, "
                          "height, detections)")
    if "error" in record:
        return None
    try:
        size = (int(record["height"]), int(record["width"]))
    except (TypeError, ValueError):
        raise RecordError(f"{source}: {record['image']}: width and height must be whole numbers") from None
    return detections_from_records(record["detections"], size, class_names, source=f"{source}: {record['image']}")


def frame_record(index: int, time: float, dets: Detections, mask_format: str = "rle") -> dict:
    """One video frame's Frame record (`time` in seconds from the start)."""
    return {"frame": int(index), "time": round(float(time), 4), "detections": detection_records(dets, mask_format)}


def detections_from_frame_record(record: Mapping[str, Any], image_size: tuple[int, int],
                                 class_names: Sequence[str] | None = None, source: str = "frames") -> Detections:
    """A Frame record -> its `Detections` (frames do not repeat their size: pass (h, w))."""
    try:
        return detections_from_records(record["detections"], image_size, class_names,
                                       source=f"{source}: frame {record['frame']}")
    except (KeyError, TypeError) as exc:
        raise RecordError(f"{source}: not an ovdet frame record (needs frame, time, detections)") from exc


def classification_record(image: str, probabilities: Mapping[str, float], top: int = 5) -> dict:
    """One image's Classification record: every class's probability, and the `top` best."""
    probs = {str(k): float(v) for k, v in probabilities.items()}
    best = sorted(probs.items(), key=lambda kv: -kv[1])[: max(0, int(top))]  # stable: ties keep class order
    return {"image": str(image), "probabilities": probs,
            "top": [{"class_name": n, "probability": round(p, SCORE_DECIMALS)} for n, p in best]}


def probabilities_from_record(record: Mapping[str, Any], source: str = "results") -> dict[str, float]:
    """A Classification record -> {class name: probability}."""
    try:
        return {str(k): float(v) for k, v in record["probabilities"].items()}
    except (KeyError, TypeError, AttributeError, ValueError):
        raise RecordError(f"{source}: not an ovdet classification record (needs image, probabilities)") from None
