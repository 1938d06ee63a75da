"""Evaluation of detectors on COCO, LVIS and open-vocabulary COCO (`ovdet eval`).

Modules, one job each:
  dataset  reading / validating annotation and results files; atomic JSON writes
  coco     COCO box / mask AP via pycocotools COCOeval
  ovcoco   OV-COCO AP50 on novel / base / all classes (split shipped in data/)
  lvis     LVIS box / mask AP via lvis-api LVISEval (standard and Fixed AP), numpy >= 1.24 fix
  runner   running a Detector over annotated images -> COCO results, resumable
  report   metrics and per-category tables, precision-recall plot
  command  the `ovdet eval` subcommand (argparse wiring)

Heavy imports (pycocotools, lvis, torch, matplotlib) happen inside functions, so importing
this package, e.g. to build the CLI parser, stays cheap.
"""

from __future__ import annotations

from typing import Iterable, Sequence

PROTOCOLS = ("coco", "lvis", "ov-coco")
IOU_TYPES = ("bbox", "segm")  # box AP, mask AP


def evaluate(protocol: str, dataset, results: Sequence[dict], image_ids: Iterable[int] | None = None,
             lvis_mode: str = "standard", iou_type: str = "bbox"):
    """Score COCO results with a protocol; returns an `ovdet.eval.coco.Evaluation`.

    Args:
        protocol: "coco", "lvis" or "ov-coco".
        dataset: an `ovdet.eval.dataset.Dataset` (see `load_dataset`).
        results: [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}].
        image_ids: evaluated images (default: every image in the annotations).
        lvis_mode: "standard" (300 detections per image) or "fixed" (Fixed AP).
        iou_type: "bbox" (box AP) or "segm" (mask AP: results with "segmentation" COCO RLEs,
            annotations with masks).
    """
    if protocol == "coco":
        from .coco import evaluate_coco

        return evaluate_coco(dataset, results, image_ids, iou_type=iou_type)
    if protocol == "ov-coco":
        from .ovcoco import evaluate_ov_coco

        return evaluate_ov_coco(dataset, results, image_ids, iou_type=iou_type)
    if protocol == "lvis":
        from .lvis import evaluate_lvis

        return evaluate_lvis(dataset, results, image_ids, mode=lvis_mode, iou_type=iou_type)
    raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
