"""The one unit of labelling work, `paths -> records`, shared by the local loop and the Ray actor.

Both engines hand the same chunks of paths (fixed by `chunks()`) to a `LabelWork`, so a chunk
is always one forward batch of the same images whichever engine, worker or resume ran it: the
annotations are the same bit for bit.

A record per image: the Image record of `ovdet.records` (what `ovdet detect --json` writes),
over the ontology's classes, best score first; or its error record for an image that could not
be read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ..errors import ImageReadError
from ..postprocess import select_detections
from ..records import error_record, image_record
from ..structures import Detections
from .ontology import Ontology


def chunks(paths: Sequence[str], size: int) -> list[tuple[int, list[str]]]:
    """[(chunk index, paths)]: consecutive runs of `size` paths, the unit of batching and of shards."""
    size = max(1, int(size))
    return [(k, list(paths[i : i + size])) for k, i in enumerate(range(0, len(paths), size))]


def to_classes(dets: Detections, prompt_class: Sequence[int], classes: Sequence[str], thresholds: Sequence[float],
               nms_iou: float, max_detections: int) -> Detections:
    """Detections over prompts -> detections over ontology classes.

    Args:
        dets: one image's detections; `class_ids` index the prompts.
        prompt_class: class index of each prompt; classes: the ontology's class names.
        thresholds: score cut per class (strictly above).
        nms_iou: boxes of one class overlapping above this IoU are merged into the best one
            (NMS within each class, as `select_detections` does it); >= 1 keeps them all.
    Returns:
        `Detections` over `classes`, best score first, at most `max_detections`.
    """
    class_ids = np.asarray(prompt_class, dtype=np.int64)[dets.class_ids]
    # one candidate per detection: its score in its class's column, so selection (per-class
    # thresholds, per-class NMS, top-k) is the detector's own
    scores = np.zeros((len(dets), len(classes)), np.float32)
    scores[np.arange(len(dets)), class_ids] = dets.scores
    sel = select_detections(dets.xyxy, scores, np.asarray(thresholds, np.float32), nms_iou=nms_iou,
                            max_detections=max_detections, multi_label=True)
    kept = dets[sel.index]
    return dataclasses.replace(kept, class_ids=sel.class_ids, class_names=tuple(classes))

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
        from ..io import read_model_input

        cfg = self.config
        reduce = self.detector.decode_size if cfg.reduced_decode else None
        arrays, readable, records = [], [], {}
        for path in paths:
            try:  # max_pixels checked here: an image over it is skipped with its reason, the chunk goes on
                arrays.append(read_model_input(path, cfg.max_pixels, reduce))
                readable.append(path)
            except ImageReadError as exc:
                records[path] = error_record(path, str(exc))
        if arrays:
            dets = self.detector.detect_batch(arrays, list(self.ontology.prompts), threshold=self.floor,
                                              negatives=list(self.negatives), batch_size=len(arrays))
            self.images += len(arrays)
            for path, det in zip(readable, dets):
                records[path] = self.record(path, det)
        return [records[p] for p in paths]

    def record(self, path: str, det: Detections) -> dict:
        """One image's `Detections` (over prompts) -> its Image record (over classes)."""
        cfg = self.config
        dets = to_classes(det, self.ontology.prompt_class, self.ontology.names, self.thresholds, cfg.nms_iou,
                          cfg.max_detections)
        return image_record(path, dets)
