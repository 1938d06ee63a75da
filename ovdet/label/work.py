"""The one unit of labelling work, `paths -> records`, shared by the local loop and the Ray actor.

Both engines hand the same chunks of paths (fixed by `chunks()`) to a `LabelWork`, so a chunk
is always one forward batch of the same images whichever engine, worker or resume ran it: the
annotations are the same bit for bit.

A record (JSON-ready) per image:
    {"path": str, "width": int, "height": int,
     "xyxy": [[x1, y1, x2, y2], ...] (original pixels, 2 decimals),
     "scores": [float, ...] (5 decimals), "class_ids": [ontology class index, ...]}
best score first; or {"path": str, "error": str} for an image that could not be read.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ImageReadError
from .ontology import Ontology


def chunks(paths: Sequence[str], size: int) -> list[tuple[int, list[str]]]:
    """[(chunk index, paths)]: consecutive runs of `size` paths, the unit of batching and of shards."""
    size = max(1, int(size))
    return [(k, list(paths[i : i + size])) for k, i in enumerate(range(0, len(paths), size))]


def merge_prompts(xyxy: np.ndarray, scores: np.ndarray, prompt_ids: np.ndarray, prompt_class: Sequence[int],
                  thresholds: Sequence[float], nms_iou: float, max_detections: int):
    """Detections over prompts -> detections over ontology classes.

    Args:
        xyxy: (N, 4) float boxes in pixels; scores: (N,); prompt_ids: (N,) index into the prompts.
        prompt_class: class index of each prompt; thresholds: score cut per class (strictly above).
        nms_iou: boxes of one class overlapping above this IoU are merged into the best one
            (torchvision batched_nms, i.e. NMS within each class); >= 1 keeps them all.
    Returns:
        (xyxy (K, 4) float32, scores (K,) float32, class_ids (K,) int64), best score first.
    """
    import torch
    from torchvision.ops import batched_nms

    class_ids = np.asarray(prompt_class, dtype=np.int64)[prompt_ids] if len(prompt_ids) else np.zeros(0, np.int64)
    keep = scores > np.asarray(thresholds, dtype=np.float32)[class_ids] if len(scores) else np.zeros(0, bool)
    xyxy, scores, class_ids = xyxy[keep], scores[keep], class_ids[keep]
    b, s = torch.from_numpy(np.ascontiguousarray(xyxy, np.float32)), torch.from_numpy(scores.astype(np.float32))
    if nms_iou < 1.0 and len(s):
        order = batched_nms(b, s, torch.from_numpy(class_ids), nms_iou).numpy()
    else:
        order = torch.sort(s, descending=True, stable=True).indices.numpy()
    order = order[:max_detections]
    return xyxy[order].astype(np.float32), scores[order].astype(np.float32), class_ids[order]


class LabelWork:
    """Callable `paths -> records` for one detector config and ontology.

    The detector is built on the first call (in the process that runs the work: a Ray actor
    builds its own). `images` counts the images run through the model, for tests and reports.
    """

    def __init__(self, config, ontology: Ontology | dict, detector: Any = None):
        self.config = config
        self.ontology = ontology if isinstance(ontology, Ontology) else Ontology.from_dict(ontology)
        self._detector = detector
        self.images = 0
        thr = float(config.threshold)
        self.thresholds = self.ontology.thresholds(thr)
        # the detector keeps everything above the lowest cut; each class's own cut is applied after
        self.floor = min((thr, *self.thresholds))
        config_negatives = [n.strip() for n in (config.negatives or "").split(",") if n.strip()]
        self.negatives = tuple(dict.fromkeys([*config_negatives, *self.ontology.negatives]))

    @property
    def detector(self):
        if self._detector is None:
            from ..detector import Detector

            self._detector = Detector.from_config(self.config)
        return self._detector

    def load(self):
        """Build the detector now (it is otherwise built on the first call); returns it."""
        return self.detector

    def __call__(self, paths: Sequence[str]) -> list[dict]:
        from ..io import read_image

        cfg = self.config
        reduce = self.detector.decode_size if cfg.reduced_decode else None
        arrays, readable, records = [], [], {}
        for path in paths:
            try:  # max_pixels checked here: an image over it is skipped with its reason, the chunk goes on
                loaded = read_image(path, cfg.max_pixels, reduce)
                arrays.append(loaded if loaded.reduced else loaded.array)
                readable.append(path)
            except ImageReadError as exc:
                records[path] = {"path": path, "error": str(exc)}
        if arrays:
            dets = self.detector.detect_batch(arrays, list(self.ontology.prompts), threshold=self.floor,
                                              negatives=list(self.negatives), batch_size=len(arrays))
            self.images += len(arrays)
            for path, det in zip(readable, dets):
                records[path] = self.record(path, det)
        return [records[p] for p in paths]

    def record(self, path: str, det) -> dict:
        """One image's `Detections` (over prompts) -> its record (over classes)."""
        cfg = self.config
        xyxy, scores, class_ids = merge_prompts(det.xyxy, det.scores, det.class_ids, self.ontology.prompt_class,
                                                self.thresholds, cfg.nms_iou, cfg.max_detections)
        h, w = det.image_size
        return {
            "path": path, "width": int(w), "height": int(h),
            "xyxy": [[round(float(v), 2) for v in box] for box in xyxy],
            "scores": [round(float(s), 5) for s in scores],
            "class_ids": [int(c) for c in class_ids],
        }
