"""`ovdet search`: a text or exemplar query -> ranked (image, box, score) hits from the index.

The query goes through the Detector as a vocabulary does for `ovdet detect` (prompt
templates, text cache, exemplars, negatives); the stored regions are scored by the backend's
own `score_rows` (for OWL the class head, objectness fusion as configured), then each image's
candidates go through the Detector's score policy (calibration, thresholds, NMS, top-k): the
hits of an image are `ovdet detect`'s detections for that image, restricted to the stored
regions. A full scan scores every region; with an ANN index (`ann.py`) only its candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ..errors import OvdetError
from .store import Store, vectors_of

POOL_PER_HIT = 50  # candidate regions kept per hit asked for (tokens cluster on objects; NMS merges them)
MIN_POOL = 1000


@dataclass(frozen=True)
class Hit:
    """One search result. box: xyxy pixels of the image itself; score: as `ovdet detect`
    reports it (calibrated when the detector has a calibration); raw_score: the logit/cosine."""

    path: str
    box: tuple[float, float, float, float]
    score: float
    class_name: str
    raw_score: float
    image_size: tuple[int, int]  # (height, width)

    def as_dict(self) -> dict[str, Any]:
        from ..records import BOX_DECIMALS, SCORE_DECIMALS

        return {"image": self.path, "box": [round(float(v), BOX_DECIMALS) for v in self.box],
                "score": round(self.score, SCORE_DECIMALS), "class_name": self.class_name,
                "raw_score": round(self.raw_score, SCORE_DECIMALS),
                "image_size": {"height": self.image_size[0], "width": self.image_size[1]}}


class CandidatePool:
    """The best `size` regions seen so far by their best class score (scores kept)."""

    def __init__(self, size: int):
        self.size = size
        self.parts: list[dict[str, np.ndarray]] = []
        self.rows = 0

    def add(self, part: dict[str, np.ndarray]) -> None:
        if len(part["best"]):
            self.parts.append(part)
            self.rows += len(part["best"])
        if self.rows > 2 * self.size:
            self.trim()

    def trim(self) -> dict[str, np.ndarray]:
        if not self.parts:
            return {}
        merged = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        if len(merged["best"]) > self.size:
            keep = np.argpartition(-merged["best"], self.size - 1)[: self.size]
            merged = {k: v[keep] for k, v in merged.items()}
        self.parts, self.rows = [merged], len(merged["best"])
        return merged


def score_candidates(detector, rows: dict[str, np.ndarray], class_embeds, num_classes: int,
                     floor: float) -> dict[str, np.ndarray]:
    """Stored rows (image_id, box, objectness, vector) -> the same rows with (N, C + K) scores
    and raw values from the backend's `score_rows`; rows whose best class score is below
    `floor` (the lowest threshold) are dropped."""
    import torch

    from ..scoring import drop_negatives

    vectors = torch.from_numpy(np.array(rows["vector"], np.float32)).to(detector.device)
    obj_np = np.array(rows["objectness"], np.float32)
    objectness = None if np.isnan(obj_np).all() else torch.from_numpy(obj_np).to(detector.device)
    scores, raw = detector.backend.score_rows(vectors, objectness, class_embeds)
    best = drop_negatives(scores, num_classes).max(dim=1).values if len(scores) else scores.new_zeros(0)
    keep = (best >= floor).cpu().numpy() & (best > 0).cpu().numpy()
    return {"image_id": rows["image_id"][keep], "box": np.asarray(rows["box"], np.float32)[keep],
            "scores": scores.float().cpu().numpy()[keep], "raw": raw.float().cpu().numpy()[keep],
            "best": best.float().cpu().numpy()[keep]}


def search_index(store: Store, detector, classes: str | Iterable[Any], top: int = 20, threshold: float | None = None,
                 negatives: str | Iterable[str] | None = None, ann: bool | None = None) -> list[Hit]:
    """Rank the stored regions for `classes` (names and/or `ovdet.Example`s, as for detect).

    `ann`: None = use the ANN index when the index has one; False = full scan; True = the ANN
    index (error when there is none). Returns at most `top` hits, best first."""
    import torch

    from .ann import ann_candidates, has_ann
    from .rows import check_backend

    check_backend(detector)
    if top < 1:
        raise OvdetError(f"--top must be at least 1, got {top}")
    resolved = detector.resolve_classes(classes, negatives)
    names = resolved.names
    thr = detector.score_policy.thresholds(names, threshold, detector.device)
    floor = float(thr.min()) if isinstance(thr, torch.Tensor) else float(thr)
    if detector.calibration is not None:
        floor = 0.0  # the calibration maps scores before the threshold: prune nothing here
    class_embeds = detector.class_table.embed(resolved.vocabulary, resolved.negatives)
    pool = CandidatePool(max(MIN_POOL, POOL_PER_HIT * top))
    use_ann = has_ann(store) if ann is None else ann
    if use_ann:
        if not has_ann(store):
            raise OvdetError(f"{store.uri} has no ANN index yet (built from {store.regions.count_rows()} regions on; "
                             "see --ann-min-rows)")
        queries = detector.backend.query_vectors(class_embeds[: len(names)]).cpu().numpy()
        pool.add(score_candidates(detector, ann_candidates(store, queries, pool.size), class_embeds, len(names), floor))
    else:
        for batch in store.scan(["image_id", "box", "objectness", "vector"]):
            rows = {"image_id": batch.column("image_id").to_numpy(), "box": vectors_of(batch.column("box")),
                    "objectness": batch.column("objectness").to_numpy(zero_copy_only=False),
                    "vector": vectors_of(batch.column("vector"))}
            pool.add(score_candidates(detector, rows, class_embeds, len(names), floor))
    return finalise_hits(store, detector, pool.trim(), names, thr, top)


def finalise_hits(store: Store, detector, cands: dict[str, np.ndarray], names: tuple[str, ...], thr, top: int) -> list[Hit]:
    """Each image's candidates through the Detector's score policy -> hits, best first."""
    import torch

    from ..backends import RegionScores

    if not cands:
        return []
    images = store.paths(np.unique(cands["image_id"]).tolist())
    order = np.argsort(cands["image_id"], kind="stable")
    ids = cands["image_id"][order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    hits: list[Hit] = []
    device = detector.device
    for s, e in zip(starts, np.r_[starts[1:], len(ids)]):
        rows = order[s:e]
        info = images.get(int(ids[s]))
        if info is None:  # deleted meanwhile
            continue
        size = (int(info["height"]), int(info["width"]))
        cand = RegionScores(boxes=torch.from_numpy(cands["box"][rows]).to(device),
                            scores=torch.from_numpy(cands["scores"][rows]).to(device),
                            raw=torch.from_numpy(cands["raw"][rows]).to(device), image_size=size)
        dets = detector.score_policy.finalise(cand, names, thr)
        for box, score, cid, raw in zip(dets.xyxy, dets.scores, dets.class_ids, dets.raw_scores):
            hits.append(Hit(info["path"], tuple(float(v) for v in box), float(score), names[int(cid)], float(raw), size))
    hits.sort(key=lambda h: (-h.score, h.path, h.box))
    return hits[:top]


@dataclass(frozen=True)
class ImageHit:
    """One whole-image result: `similarity` is the cosine between the query's embedding and
    the image's vector (the normalised mean of its region embeddings), not a detection score."""

    path: str
    similarity: float
    class_name: str

    def as_dict(self) -> dict[str, Any]:
        from ..records import SCORE_DECIMALS

        return {"image": self.path, "similarity": round(self.similarity, SCORE_DECIMALS), "class_name": self.class_name}


def search_images(store: Store, detector, classes: str | Iterable[Any], top: int = 20) -> list[ImageHit]:
    """Rank whole images by their stored image vector against each class of `classes` (a
    coarse, FiftyOne-style similarity; region hits are `search_index`'s). Best first."""
    import torch

    from .rows import check_backend

    check_backend(detector)
    resolved = detector.resolve_classes(classes, ())
    # unit queries and image vectors in the regions' space (OWL: [q, 1] against [mean, 0]): cosines
    queries = detector.backend.query_vectors(detector.class_table.embed(resolved.vocabulary, resolved.negatives))
    table = store.images.search().select(["path", "vector"]).limit(None).to_arrow()
    vectors = torch.from_numpy(np.array(vectors_of(table.column("vector")), np.float32))
    sims = vectors @ queries.float().cpu().T  # (images, C)
    best, cls = sims.max(dim=1) if len(sims) else (sims.new_zeros(0), sims.new_zeros(0, dtype=torch.long))
    paths = table.column("path").to_pylist()
    order = torch.argsort(best, descending=True)[:top].tolist()
    return [ImageHit(paths[i], float(best[i]), resolved.names[int(cls[i])]) for i in order]
