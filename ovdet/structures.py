"""`Detections`: the result type, a frozen bundle of parallel numpy arrays.

Boxes are xyxy in pixels of the ORIGINAL image (not the model's resized input), float32.
Converters to other formats live in `ovdet.adapters`; the supervision pair is also offered as
`Detections.to_supervision()` / `Detections.from_supervision(...)`, where supervision users
look for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .instance_masks import Masks


def _as_array(value: Any, dtype: Any, name: str) -> np.ndarray:
    try:
        return np.ascontiguousarray(np.asarray(value, dtype=dtype))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Detections.{name} cannot be converted to {np.dtype(dtype)}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections for one image.

    Attributes:
        xyxy: (N, 4) float32, boxes as x1, y1, x2, y2 in original-image pixels.
        scores: (N,) float32 in [0, 1]; comparable across classes.
        class_ids: (N,) int64, indices into `class_names`.
        class_names: the vocabulary the detector was asked for, in order.
        image_size: (height, width) of the original image.
        raw_scores: optional (N,) float32, the score before calibration/fusion (e.g. a logit or
            cosine similarity), kept so users can re-threshold or re-calibrate.
        embeddings: optional (N, D) float32 region embeddings.
        tracker_ids: optional (N,) int64 track ids (video).
        masks: optional `Masks` (ovdet.instance_masks), one per detection, kept as crops;
            `masks.to_dense()` gives the (N, H, W) bool array.
        extra: other per-detection fields a model adds, {name: (N, ...) array}.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    raw_scores: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    tracker_ids: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    masks: Masks | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise fields once, here
        xyxy = _as_array(self.xyxy, np.float32, "xyxy")
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"Detections.xyxy must have shape (N, 4), got {xyxy.shape}")
        n = len(xyxy)
        set_(self, "xyxy", xyxy)
        set_(self, "scores", self._vector(self.scores, np.float32, "scores", n))
        set_(self, "class_ids", self._vector(self.class_ids, np.int64, "class_ids", n))
        set_(self, "class_names", tuple(str(c) for c in self.class_names))
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ValueError(f"Detections.image_size must be (height, width) > 0, got {self.image_size}")
        set_(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        if n and (self.class_ids.min() < 0 or self.class_ids.max() >= len(self.class_names)):
            raise ValueError(
                f"Detections.class_ids must be in [0, {len(self.class_names)}) "
                f"(the vocabulary size), got min {self.class_ids.min()} max {self.class_ids.max()}"
            )
        if self.raw_scores is not None:
            set_(self, "raw_scores", self._vector(self.raw_scores, np.float32, "raw_scores", n))
        if self.tracker_ids is not None:
            set_(self, "tracker_ids", self._vector(self.tracker_ids, np.int64, "tracker_ids", n))
        if self.embeddings is not None:
            emb = _as_array(self.embeddings, np.float32, "embeddings")
            if emb.ndim != 2 or len(emb) != n:
                raise ValueError(f"Detections.embeddings must have shape ({n}, D), got {emb.shape}")
            set_(self, "embeddings", emb)
        if self.masks is not None:
            if not isinstance(self.masks, Masks):
                raise ValueError(f"Detections.masks must be an ovdet Masks, got {type(self.masks).__name__} "
                                 "(Masks.from_dense makes one from an (N, H, W) array)")
            if len(self.masks) != n or self.masks.image_size != self.image_size:
                raise ValueError(f"Detections.masks holds {len(self.masks)} masks of {self.masks.image_size}, "
                                 f"expected {n} of {self.image_size}")
        extra = {}
        for key, value in dict(self.extra).items():
            arr = np.asarray(value)
            if len(arr) != n:
                raise ValueError(f"Detections.extra[{key!r}] has {len(arr)} rows, expected {n}")
            extra[key] = arr
        set_(self, "extra", extra)

    @staticmethod
    def _vector(value: Any, dtype: Any, name: str, n: int) -> np.ndarray:
        arr = _as_array(value, dtype, name).reshape(-1)
        if len(arr) != n:
            raise ValueError(f"Detections.{name} has {len(arr)} entries but xyxy has {n} boxes")
        return arr

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, class_names: Sequence[str], image_size: tuple[int, int]) -> "Detections":
        """No detections for an image of `image_size` = (h, w)."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            class_ids=np.zeros(0, np.int64),
            class_names=tuple(class_names),
            image_size=image_size,
        )

    @classmethod
    def concat(cls, items: Sequence["Detections"]) -> "Detections":
        """Join detections of the SAME image and vocabulary (e.g. from tiles or several passes)."""
        if not items:
            raise ValueError("Detections.concat needs at least one Detections")
        first = items[0]
        for other in items[1:]:
            if other.class_names != first.class_names or other.image_size != first.image_size:
                raise ValueError("Detections.concat: all parts must share class_names and image_size")

        def join(name: str) -> np.ndarray | None:
            parts = [getattr(d, name) for d in items]
            if all(p is None for p in parts):
                return None
            if any(p is None for p in parts):
                raise ValueError(f"Detections.concat: {name} is set on some parts and not on others")
            return np.concatenate(parts)

        masks = [d.masks for d in items]
        if any(m is None for m in masks) and not all(m is None for m in masks):
            raise ValueError("Detections.concat: masks is set on some parts and not on others")
        keys = set(first.extra)
        if any(set(d.extra) != keys for d in items):
            raise ValueError("Detections.concat: all parts must have the same extra keys")
        return cls(
            xyxy=np.concatenate([d.xyxy for d in items]),
            scores=np.concatenate([d.scores for d in items]),
            class_ids=np.concatenate([d.class_ids for d in items]),
            class_names=first.class_names,
            image_size=first.image_size,
            raw_scores=join("raw_scores"),
            embeddings=join("embeddings"),
            tracker_ids=join("tracker_ids"),
            extra={k: np.concatenate([d.extra[k] for d in items]) for k in keys},
            masks=None if masks[0] is None else Masks.concat(masks),
        )

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> "Detections":
        """Select rows by boolean mask, index array, slice or int: `dets[dets.scores > 0.5]`."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        if isinstance(index, np.ndarray) and index.dtype == bool and index.shape != (len(self),):
            raise IndexError(f"boolean mask has shape {index.shape}, expected ({len(self)},)")

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[index]

        return Detections(
            xyxy=self.xyxy[index],
            scores=self.scores[index],
            class_ids=self.class_ids[index],
            class_names=self.class_names,
            image_size=self.image_size,
            raw_scores=pick(self.raw_scores),
            embeddings=pick(self.embeddings),
            tracker_ids=pick(self.tracker_ids),
            extra={k: v[index] for k, v in self.extra.items()},
            masks=None if self.masks is None else self.masks[index],
        )

    def replace(self, **fields: Any) -> "Detections":
        """A copy with some fields replaced (Detections is frozen), checked as on construction."""
        return dataclasses.replace(self, **fields)

    @property
    def labels(self) -> list[str]:
        """Class name of each detection: (N,) strings, `class_names[class_ids[i]]`."""
        return [self.class_names[i] for i in self.class_ids]

    # -- supervision ----------------------------------------------------------------------------
    # Here rather than in ovdet.adapters because supervision users expect the methods on the
    # object (as `sv.Detections.from_ultralytics`); adapters.to_supervision/from_supervision
    # call these, so there is one implementation and no import circle.
    def to_supervision(self):
        """`supervision.Detections`: xyxy, confidence (the scores), class_id, tracker_id, mask
        ((N, H, W) bool, built from the compact masks) and data["class_name"] ((N,) object
        array) plus data["raw_score"] when set."""
        import supervision as sv

        data: dict[str, Any] = {"class_name": np.array(self.labels, dtype=object)}
        if self.raw_scores is not None:
            data["raw_score"] = self.raw_scores.copy()
        if "uncalibrated_score" in self.extra:  # set when a calibration file rescored the detections
            data["uncalibrated_score"] = np.asarray(self.extra["uncalibrated_score"]).copy()
        return sv.Detections(
            xyxy=self.xyxy.copy(),
            confidence=self.scores.copy(),
            class_id=self.class_ids.copy(),
            tracker_id=None if self.tracker_ids is None else self.tracker_ids.copy(),
            mask=None if self.masks is None else self.masks.to_dense(),
            data=data,
        )

    @classmethod
    def from_supervision(cls, sv_dets, class_names: Sequence[str], image_size: tuple[int, int]) -> "Detections":
        """From a `supervision.Detections` whose class_id indexes `class_names`, for an image of
        `image_size` = (height, width) (supervision does not record it; ovdet needs it to clip
        and draw). Missing confidences become 1.0 (e.g. ground-truth boxes); missing class ids
        are an error because there is no honest default."""
        n = len(sv_dets)
        if sv_dets.class_id is None and n:
            raise ValueError("supervision.Detections has no class_id; ovdet needs one per box")
        raw = sv_dets.data.get("raw_score") if sv_dets.data else None
        return cls(
            xyxy=sv_dets.xyxy,
            scores=np.ones(n, np.float32) if sv_dets.confidence is None else sv_dets.confidence,
            class_ids=np.zeros(0, np.int64) if sv_dets.class_id is None else sv_dets.class_id,
            class_names=tuple(class_names),
            image_size=image_size,
            raw_scores=raw,
            tracker_ids=sv_dets.tracker_id,
            masks=None if sv_dets.mask is None else Masks.from_dense(sv_dets.mask, image_size),
        )

    def sorted(self) -> "Detections":
        """Highest score first (stable, so equal scores keep their order)."""
        return self[np.argsort(-self.scores, kind="stable")]

    def __repr__(self) -> str:
        h, w = self.image_size
        return f"Detections(n={len(self)}, image_size=({h}, {w}), classes={len(self.class_names)})"
