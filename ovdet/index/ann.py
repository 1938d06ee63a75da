"""The approximate-nearest-neighbour path: an IVF index (LanceDB) on the regions' vectors.

Kinds: "ivf_sq" (default: inverted lists of 8-bit scalar-quantised vectors) or "ivf_pq"
(product quantisation, E / 16 bytes a region). On the fp16 vectors of width 513 that OWL B/16
stores, LanceDB trains and encodes IVF-PQ about 25x slower than IVF-SQ on a CPU (141 s vs 5.5 s
for 100,000 regions on 2 cores; ~25 minutes for a million), hence the default.

The vectors are stored so that a region's dot product with the query vector is the class
head's logit (OWL) or cosine (CLIP regions): see the backends' `region_rows`. The ANN index
ranks by that dot product, LanceDB re-ranks its PQ candidates on the stored vectors
(`refine_factor`), and `search` then rescores the candidates exactly with the backend's own
scoring (objectness fusion, softmax, calibration, NMS), which the dot product alone does not
capture. Below `min_rows` regions a full scan is fast enough and exact everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .store import Store

DEFAULT_ANN_MIN_ROWS = 200_000  # regions: a full scan of that many takes ~0.5 s on 2 CPU cores (docs/search.md)
SUBVECTOR_DIM = 16  # dimensions per PQ sub-vector (8-bit codes: E / 16 bytes per region in the index)
ANN_KINDS = ("ivf_sq", "ivf_pq")
REFINE_FACTOR = 10  # PQ candidates re-ranked on the stored vectors per result asked for


def has_ann(store: Store) -> bool:
    return any("vector" in list(getattr(ix, "columns", [])) for ix in store.regions.list_indices())


def num_sub_vectors(width: int) -> int:
    """A divisor of `width` giving sub-vectors of about `SUBVECTOR_DIM` dimensions (PQ needs
    one; OWL's width is D + 1, e.g. 513 = 27 x 19)."""
    divisors = [d for d in range(1, width + 1) if width % d == 0]
    return min(divisors, key=lambda d: (abs(width / d - SUBVECTOR_DIM), -d))


def num_partitions(rows: int) -> int:
    return max(1, int(math.sqrt(rows) / 2))


def build_ann(store: Store, kind: str = "ivf_sq") -> None:
    """(Re)build the ANN index over all regions now: k-means of a sample into
    `num_partitions` lists, then every vector's list and code."""
    from lancedb.index import IvfPq, IvfSq

    if kind not in ANN_KINDS:
        raise ValueError(f"ANN index kind must be one of {ANN_KINDS}, got {kind!r}")
    partitions = num_partitions(store.regions.count_rows())
    if kind == "ivf_pq":
        config = IvfPq(distance_type="dot", num_partitions=partitions,
                       num_sub_vectors=num_sub_vectors(store.manifest["width"]), sample_rate=64, max_iterations=20)
    else:
        config = IvfSq(distance_type="dot", num_partitions=partitions, sample_rate=64, max_iterations=20)
    store.regions.create_index("vector", config=config, replace=True)


def refresh_ann(store: Store, min_rows: int, changed: bool, kind: str = "ivf_sq") -> bool:
    """After a run: compact the tables when they changed (many small appends), build the ANN
    index once the regions reach `min_rows`, or fold new rows into an existing one (LanceDB's
    optimize indexes the new fragments without retraining). Returns whether there is one."""
    if changed:
        store.compact()
    exists = has_ann(store)
    if not exists and store.regions.count_rows() >= min_rows:
        build_ann(store, kind)
        store.compact()  # the index build is a new version too
        return True
    return exists


def ann_candidates(store: Store, queries: np.ndarray, limit: int, nprobes: int | None = None) -> dict[str, Any]:
    """(Q, E) query vectors -> the union of each query's `limit` best regions by dot product,
    as numpy columns image_id, box, objectness, vector (rows deduplicated)."""
    from .store import vectors_of

    rows = store.regions.count_rows()
    probes = nprobes or max(20, num_partitions(rows) // 10)
    parts: list[Any] = []
    for q in np.asarray(queries, np.float32):
        t = (store.regions.search(q, vector_column_name="vector").distance_type("dot").nprobes(probes)
             .refine_factor(REFINE_FACTOR).limit(limit).with_row_id(True)
             .select(["image_id", "box", "objectness", "vector", "_rowid"]).to_arrow())
        parts.append(t)
    out: dict[str, list] = {"image_id": [], "box": [], "objectness": [], "vector": []}
    seen: set[int] = set()
    for t in parts:  # the columns of rows not seen in an earlier query's results
        keep = np.zeros(t.num_rows, bool)
        for i, r in enumerate(t.column("_rowid").to_pylist()):
            keep[i] = r not in seen
            seen.add(r)
        if not keep.any():
            continue
        out["image_id"].append(t.column("image_id").to_numpy()[keep])
        out["box"].append(vectors_of(t.column("box"))[keep])
        out["objectness"].append(t.column("objectness").to_numpy(zero_copy_only=False)[keep])
        out["vector"].append(vectors_of(t.column("vector"))[keep])
    if not out["image_id"]:
        width = store.manifest["width"]
        return {"image_id": np.zeros(0, np.int64), "box": np.zeros((0, 4), np.float32),
                "objectness": np.zeros(0, np.float32), "vector": np.zeros((0, width), np.float32)}
    return {k: np.concatenate(v) for k, v in out.items()}
