"""Which scored candidates become detections: thresholds (global, per class, from a
calibration file), the calibration's score maps, and the selection (NMS, top-k) into
`Detections`. Works on torch tensors, or on numpy arrays for an ONNX export (no torch).
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .backends import RegionScores
from .calibration import Calibration, load_calibration, model_identity
from .config import DetectorConfig, load_class_thresholds
from .errors import ConfigError, OvdetWarning
from .io import LoadedImage
from .postprocess import select_detections
from .scoring import drop_negatives
from .structures import Detections

if TYPE_CHECKING:
    import torch


def checked_calibration(config: DetectorConfig, templates: Sequence[str]) -> Calibration | None:
    """The config's calibration file (None when it names none), checked against the model and
    templates it was fitted for (`CalibrationError` otherwise)."""
    if not config.calibration:
        return None
    calibration = load_calibration(config.calibration)
    calibration.check_model(model_identity(config), templates)
    if calibration.model is None:
        warnings.warn(f"{config.calibration} records no model (fitted on a results file without --model): "
                      "ovdet cannot check that it belongs to this detector", OvdetWarning, stacklevel=4)
    return calibration


class ScorePolicy:
    """A detector's thresholds, calibration and selection settings (from its config).

    `calibration`: an already checked `Calibration`, or None. Unknown class-threshold names
    and classes the calibration lacks are warned about once per policy."""

    def __init__(self, config: DetectorConfig, calibration: Calibration | None, numpy: bool = False):
        self.config, self.calibration, self.numpy = config, calibration, numpy
        self.class_thresholds = load_class_thresholds(config.class_thresholds) if config.class_thresholds else {}
        self.warned: set = set()

    def thresholds(self, names: Sequence[str], threshold: float | None, device: Any = None) -> float | torch.Tensor:
        """The global threshold, or a (C,) tensor (numpy array for numpy policies) on `device`
        when per-class thresholds apply.

        Per class, in order of precedence: `class_thresholds`; the calibration file's threshold
        (unless `threshold` is passed to the call or `calibration_thresholds` is off); the
        global one. Class names match case-insensitively (as duplicates are judged); names in
        the class-thresholds file that are not in this vocabulary are reported once, with the
        closest class name, since a typo would otherwise silently fall back to the global
        threshold."""
        thr = self.config.threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {thr}")
        per_class: dict[str, float] = {}
        if self.calibration is not None and self.config.calibration_thresholds and threshold is None:
            per_class = {n.casefold(): self.calibration.threshold_for(n) for n in names}
        if not self.class_thresholds and not per_class:
            return thr
        per_class.update({k.casefold(): v for k, v in self.class_thresholds.items()})
        vocab = {n.casefold(): n for n in names}
        unknown = [k for k in self.class_thresholds if k.casefold() not in vocab and k not in self.warned]
        for key in unknown:
            self.warned.add(key)
            close = difflib.get_close_matches(key.casefold(), list(vocab), n=1, cutoff=0.6)
            hint = f" (did you mean {vocab[close[0]]!r}?)" if close else ""
            warnings.warn(f"class_thresholds: {key!r} is not in the vocabulary{hint}; its threshold is unused",
                          OvdetWarning, stacklevel=3)
        values = [per_class.get(n.casefold(), thr) for n in names]
        if self.numpy:
            return np.asarray(values, np.float32)
        import torch

        return torch.tensor(values, device=device)

    def calibrate(self, scores: Any, names: Sequence[str]) -> Any:
        """(P, C) scores (tensor or numpy array) -> calibrated ones (the calibration file's
        map per class; classes the file lacks take its shared map, reported once)."""
        cal = self.calibration
        new = [n for n in cal.unknown(names) if ("calibration", n) not in self.warned]
        if new:
            self.warned.update(("calibration", n) for n in new)
            warnings.warn(f"calibration {cal.path}: no fit for {', '.join(map(repr, new[:5]))}"
                          f"{' ...' if len(new) > 5 else ''}; using its shared calibration and threshold",
                          OvdetWarning, stacklevel=4)
        return cal.apply_scores(scores, names)

    def finalise(self, cand: RegionScores, names: tuple[str, ...], threshold: float | torch.Tensor) -> Detections:
        """One image's candidates ((P, 4) xyxy pixel boxes, (P, C + K) scores with K negative
        columns) -> `Detections`, best first: negatives and empty boxes zeroed, calibrated,
        thresholded, NMS and top-k by the config."""
        cfg = self.config
        c = len(names)
        # boxes that clipping to the image squashed to nothing (e.g. OWLv2 tokens over the
        # padding) describe no object: score 0 never passes the strict threshold
        b = cand.boxes
        valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        scores = drop_negatives(cand.scores, c) * valid[:, None]
        uncalibrated = None
        if self.calibration is not None:
            uncalibrated, scores = scores, self.calibrate(scores, names)
        sel = select_detections(
            cand.boxes,
            scores,
            threshold=threshold,
            nms_iou=cfg.nms_iou,
            class_agnostic_nms=cfg.class_agnostic_nms,
            max_detections=cfg.max_detections,
            multi_label=cfg.multi_label,
        )
        raw = cand.raw[:, :c][sel.index, sel.class_ids]
        extra = {}
        if uncalibrated is not None:
            extra["uncalibrated_score"] = as_numpy(uncalibrated[sel.index, sel.class_ids]).astype(np.float32)
        rows = as_numpy(sel.index).astype(np.int64)
        return Detections(
            xyxy=as_numpy(cand.boxes[sel.index]),
            scores=as_numpy(sel.scores),
            class_ids=as_numpy(sel.class_ids).astype(np.int64),
            class_names=names,
            image_size=cand.image_size,
            raw_scores=as_numpy(raw).astype(np.float32),
            extra=extra,
            masks=None if cand.masks is None else cand.masks.select(rows, cand.image_size),
        )


def to_original_pixels(cand: RegionScores, image: LoadedImage) -> RegionScores:
    """Candidates of an image decoded reduced, moved to the pixels of the image itself."""
    if not image.reduced:
        return cand
    (h, w), (rh, rw) = image.size, image.array.shape[:2]
    if isinstance(cand.boxes, np.ndarray):  # an ONNX export's candidates
        return dataclasses.replace(cand, boxes=cand.boxes * np.float32([w / rw, h / rh, w / rw, h / rh]), image_size=(h, w))
    import torch

    scale = torch.tensor([w / rw, h / rh, w / rw, h / rh], dtype=cand.boxes.dtype, device=cand.boxes.device)
    return dataclasses.replace(cand, boxes=cand.boxes * scale, image_size=(h, w))


def as_numpy(values: Any) -> np.ndarray:
    """A torch tensor (any device) or numpy array as a numpy array."""
    if isinstance(values, np.ndarray):
        return values
    values = values.detach().cpu()
    return (values.float() if values.is_floating_point() else values).numpy()  # bf16 has no numpy twin


__all__ = ["ScorePolicy", "as_numpy", "checked_calibration", "to_original_pixels"]
