"""`ovdet export --check IMAGE`: how far an export's outputs are from the torch model's.

Both run on the same image and vocabulary: the text embeddings, every candidate box and score
before thresholding (what the graphs and the numpy geometry produce), then the detections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

# what fp32 exports must meet (the tests hold them to it on tiny models)
SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE_PX = 0.02


def _max_diff(a, b) -> float:
    a = a if isinstance(a, np.ndarray) else a.detach().float().cpu().numpy()
    b = b if isinstance(b, np.ndarray) else b.detach().float().cpu().numpy()
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def compare(torch_detector, export_detector, image: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Largest absolute differences export vs torch on one RGB uint8 image:
    text_embeddings, candidate_boxes_px, candidate_scores, candidate_raw, detection counts."""
    names = tuple(classes)
    te, oe = torch_detector.class_embeddings(names), export_detector.class_embeddings(names)
    tc = torch_detector.backend.predict([image], te)[0]
    oc = export_detector.backend.predict([image], oe)[0]
    td, od = torch_detector.detect(image, names), export_detector.detect(image, names)
    out = {
        "text_embeddings": _max_diff(te, oe),
        "candidate_boxes_px": _max_diff(tc.boxes, oc.boxes),
        "candidate_scores": _max_diff(tc.scores, oc.scores),
        "candidate_raw": _max_diff(tc.raw, oc.raw),
        "torch_detections": float(len(td)),
        "export_detections": float(len(od)),
    }
    if len(td) == len(od) and (td.class_ids == od.class_ids).all():  # same ranking: compare row by row
        out["detection_scores"] = _max_diff(td.scores, od.scores)
        out["detection_boxes_px"] = _max_diff(td.xyxy, od.xyxy)
    return out


def check_export(model: str, folder: Path, image_path: str, classes: Sequence[str]) -> tuple[dict[str, float], bool]:
    """Run `model` (torch, fp32, CPU) and the export in `folder` on `image_path`; returns the
    differences and whether they are within the fp32 tolerances."""
    from ..detector import Detector
    from ..io import load_image

    image = load_image(image_path)
    torch_det = Detector.from_pretrained(model, device="cpu", precision="fp32", cache_text=False)
    export_det = Detector.from_pretrained(str(folder), device="cpu", cache_text=False)
    diffs = compare(torch_det, export_det, image, classes)
    ok = diffs["candidate_scores"] <= SCORE_TOLERANCE and diffs["candidate_boxes_px"] <= BOX_TOLERANCE_PX
    return diffs, ok
