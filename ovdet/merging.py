"""One detection per object from overlapping passes over an image (tiles, the whole image).

Each pass has already been through the detector's own threshold and NMS; what remains are the
duplicates the overlaps create: the same object seen by two tiles, or a cut part of it at one
tile's edge. So only detections of DIFFERENT passes are compared, and only passes whose windows
intersect can hold a pair (a detection lies inside its pass's window). The candidate pairs are
found window pair by window pair, then a greedy pass in rank order keeps or merges:

  - rank: detections touching an inner tile edge (cut objects) after all others, then by score,
    so a confident part never replaces the whole object;
  - "nms": the first of a group is kept, the others dropped; "nmm" (greedy non-maximum merging,
    as in SAHI): the kept box grows to the union of the boxes it absorbs, keeping its score
    and class; the absorbed ones do not absorb others in turn;
  - overlap: "iou" (intersection over union) or "ios" (intersection over the smaller area, so
    a part inside the whole counts as the same object).

torchvision's `nms` is not used: it compares every box with every other (within a tile too,
undoing the detector's own NMS threshold), knows IoU only and never merges; at 1,500 tiles of a
20000 x 20000 image its all-pairs loop also dominates the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_area


@dataclass(frozen=True)
class Merged:
    """keep: (K,) int64 rows of the input, in rank order; xyxy: (K, 4) float32 their boxes
    after merging (equal to the input's for "nms"); absorbed: K int64 arrays, the rows each
    kept detection absorbed (dropped for "nms", merged into it for "nmm": their masks too)."""

    keep: np.ndarray
    xyxy: np.ndarray
    absorbed: tuple[np.ndarray, ...] = ()


def overlap(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, 4) x (M, 4) xyxy boxes -> (N, M) IoU or IoS (intersection over the smaller area)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a, area_b = box_area(a)[:, None], box_area(b)[None, :]
    denom = area_a + area_b - inter if metric == "iou" else torch.minimum(area_a, area_b)
    return inter / denom.clamp(min=1e-9)


def candidate_pairs(xyxy: torch.Tensor, class_ids: torch.Tensor, passes: np.ndarray, windows: np.ndarray,
                    metric: str, threshold: float, class_agnostic: bool) -> np.ndarray:
    """(E, 2) int64 pairs (i, j) of detections from different passes whose windows intersect,
    of the same class (unless `class_agnostic`), overlapping by more than `threshold`."""
    order = np.argsort(passes, kind="stable")
    bounds = np.searchsorted(passes[order], np.arange(len(windows) + 1))
    members = [order[bounds[p] : bounds[p + 1]] for p in range(len(windows))]
    w = torch.as_tensor(windows, dtype=torch.float32)
    meets = (torch.minimum(w[:, None, 2:], w[None, :, 2:]) > torch.maximum(w[:, None, :2], w[None, :, :2])).all(-1)
    found = []
    for p, q in torch.nonzero(torch.triu(meets, diagonal=1)).tolist():
        if len(members[p]) == 0 or len(members[q]) == 0:
            continue
        a, b = torch.as_tensor(members[p]), torch.as_tensor(members[q])
        hit = overlap(xyxy[a], xyxy[b], metric) > threshold
        if not class_agnostic:
            hit &= class_ids[a][:, None] == class_ids[b][None, :]
        i, j = torch.nonzero(hit, as_tuple=True)
        if len(i):
            found.append(torch.stack([a[i], b[j]], 1))
    return torch.cat(found).numpy() if found else np.zeros((0, 2), dtype=np.int64)


def merge_passes(xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, passes: np.ndarray,
                 at_edge: np.ndarray, windows: np.ndarray, method: str = "nmm", metric: str = "ios",
                 threshold: float = 0.5, class_agnostic: bool = False) -> Merged:
    """Merge detections of overlapping passes (see the module docstring).

    Args:
        xyxy: (N, 4) float boxes in image pixels; scores: (N,); class_ids: (N,) int.
        passes: (N,) int, the pass (index into `windows`) each detection comes from.
        at_edge: (N,) bool, the detection touches an inner edge of its pass's window.
        windows: (P, 4) xyxy pixel windows of the passes.
        method: "nms" or "nmm"; metric: "iou" or "ios"; threshold: overlap above which two
            detections are one object.
    """
    n = len(xyxy)
    boxes = torch.as_tensor(np.asarray(xyxy, dtype=np.float32))
    pairs = candidate_pairs(boxes, torch.as_tensor(np.asarray(class_ids)), np.asarray(passes), np.asarray(windows),
                            metric, threshold, class_agnostic)
    # adjacency lists (CSR) of the symmetric overlap graph
    both = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else pairs
    both = both[np.argsort(both[:, 0], kind="stable")] if len(both) else both
    starts = np.searchsorted(both[:, 0], np.arange(n + 1)) if len(both) else np.zeros(n + 1, dtype=np.int64)
    neighbours = both[:, 1] if len(both) else np.zeros(0, dtype=np.int64)
    rank = np.lexsort((-np.asarray(scores, dtype=np.float64), np.asarray(at_edge, dtype=bool)))
    out = np.asarray(xyxy, dtype=np.float32).copy()
    taken = np.zeros(n, dtype=bool)
    keep, absorbed = [], []
    for i in rank:  # a Python loop over detections; the pairs were found vectorised above
        if taken[i]:
            continue
        taken[i] = True
        keep.append(i)
        group = neighbours[starts[i] : starts[i + 1]]
        group = group[~taken[group]]
        absorbed.append(group)
        if len(group):
            taken[group] = True
            if method == "nmm":
                members = np.concatenate([out[[i]], out[group]])
                out[i] = np.concatenate([members[:, :2].min(0), members[:, 2:].max(0)])
    keep_arr = np.asarray(keep, dtype=np.int64)
    return Merged(keep=keep_arr, xyxy=out[keep_arr], absorbed=tuple(absorbed))
