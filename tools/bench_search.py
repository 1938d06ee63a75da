"""The `search` section of tools/bench.py: `ovdet index` / `ovdet search` on a full-size OWL
architecture with random weights.

  - query latency of `search_index` (text query, top 20) over 10,000 and 1,000,000 stored
    regions (random vectors: 1,000 random centres plus noise of half their scale, width 513 = OWLv2 B/16's D + 1,
    fp16, 100 regions per image), full scan vs the IVF-PQ index (+ exact rescoring), with the
    ANN's build time and its top-20 overlap with the full scan;
  - bytes on disk per image of those indexes (100 regions an image);
  - indexing throughput against `Detector.detect_batch` (20 classes) on the same 640x480 JPEGs,
    interleaved: the store's overhead is (index time / detect time) - 1.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

REGIONS_PER_IMAGE = 100


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def synthetic_store(path: Path, rows: int, width: int, seed: int = 0):
    """A store of `rows` random regions (clustered), written in chunks of 100,000."""
    from ovdet.index.rows import EncodedChunk
    from ovdet.index.store import Store

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, width)).astype(np.float32)
    store = Store.create(str(path), {"model": "synthetic", "identity": {}, "backend": "owl", "width": width,
                                     "dtype": "fp16", "regions": REGIONS_PER_IMAGE})
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        vectors = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, width), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) / 4  # |v| = 4: OWL-like logit scale
        ids = (start + np.arange(n)) // REGIONS_PER_IMAGE
        xy = rng.uniform(0, 500, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(10, 100, (n, 2)).astype(np.float32)], axis=1)
        images = [{"image_id": int(i), "path": f"/data/{i}.jpg", "size": 1, "mtime_ns": 1, "height": 640, "width": 640,
                   "regions": REGIONS_PER_IMAGE, "vector": np.zeros(width, np.float32)} for i in np.unique(ids)]
        chunk = EncodedChunk({"image_id": ids, "box": boxes, "objectness": rng.uniform(0, 1, n).astype(np.float32),
                              "vector": vectors}, images)
        store.add(*chunk.tables("fp16"))
    store.compact()
    return store, centres


def cluster_recall(store, centres: np.ndarray, path: Path, queries: int = 10) -> float:
    """Recall@10 of the ANN candidates (rescored by dot product) against a full scan, for
    queries near the data's cluster centres (as real queries are near real objects; the text
    query of a random-weight model is a random direction, the ANN's worst case)."""
    from ovdet.index.ann import ann_candidates
    from ovdet.index.store import vectors_of

    rng = np.random.default_rng(1)
    q = centres[rng.integers(0, len(centres), queries)]
    q = q + 0.5 * rng.standard_normal(q.shape, dtype=np.float32)
    best = [np.full(10, -np.inf) for _ in range(queries)]
    for batch in store.scan(["vector"]):  # the exact top-10 dot products, batch by batch
        dots = vectors_of(batch.column("vector")).astype(np.float32) @ q.T
        for i in range(queries):
            best[i] = np.sort(np.concatenate([best[i], dots[:, i]]))[-10:]
    found = []
    for i in range(queries):
        cand = ann_candidates(store, q[i:i + 1], limit=1000)
        top = np.sort(cand["vector"].astype(np.float32) @ q[i])[-10:]
        # the same values up to summation order (the two products differ in shape)
        found.append(np.mean([np.isclose(best[i], t, rtol=0, atol=1e-3).any() for t in top]))
    return float(np.mean(found))


def median_seconds(fn, reps: int) -> float:
    fn()  # warm: text embedding cached, files in the page cache
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def query_latency(detector, work: Path, rows: int, reps: int) -> dict:
    from ovdet.index.ann import build_ann
    from ovdet.index.search import search_index

    width = detector.backend.query_vectors(detector.class_embeddings(["x"])).shape[1]
    path = work / f"synthetic-{rows}"
    t = time.perf_counter()
    store, centres = synthetic_store(path, rows, width)
    out = {f"write_{rows}_s": time.perf_counter() - t,
           f"bytes_per_image_{rows}": folder_bytes(path) / (rows / REGIONS_PER_IMAGE)}
    exact = lambda: search_index(store, detector, "forklift", top=20, threshold=0.0, ann=False)  # noqa: E731
    out[f"exact_query_{rows}_ms"] = 1000 * median_seconds(exact, reps)
    t = time.perf_counter()
    build_ann(store)
    out[f"ann_build_{rows}_s"] = time.perf_counter() - t
    ann = lambda: search_index(store, detector, "forklift", top=20, threshold=0.0, ann=True)  # noqa: E731
    out[f"ann_query_{rows}_ms"] = 1000 * median_seconds(ann, reps)
    key = lambda h: (h.path, h.box)  # noqa: E731
    out[f"ann_top20_overlap_{rows}"] = len({key(h) for h in ann()} & {key(h) for h in exact()}) / 20
    out[f"ann_recall10_cluster_queries_{rows}"] = cluster_recall(store, centres, path)
    out[f"bytes_per_image_with_ann_{rows}"] = folder_bytes(path) / (rows / REGIONS_PER_IMAGE)
    shutil.rmtree(path, ignore_errors=True)
    return out


def indexing_overhead(detector, work: Path, images: int, reps: int, classes) -> dict:
    from PIL import Image

    from ovdet.index.build import build_index

    rng = np.random.default_rng(0)
    folder = work / "jpegs"
    folder.mkdir(exist_ok=True)
    paths = []
    for k in range(images):
        path = folder / f"{k}.jpg"
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    detector.detect_batch(paths[:1], classes)  # warm both paths: kernels, text, LanceDB's first use
    build_index(str(work / "warm"), paths[:1], detector=detector, progress=False)
    counter = iter(range(10**6))

    def index() -> None:
        db = work / f"idx{next(counter)}"
        build_index(str(db), paths, detector=detector, progress=False)
        shutil.rmtree(db, ignore_errors=True)

    secs: dict[str, list[float]] = {"detect": [], "index": []}
    for _ in range(reps):  # interleaved
        for name, fn in (("detect", lambda: detector.detect_batch(paths, classes)), ("index", index)):
            t = time.perf_counter()
            fn()
            secs[name].append(time.perf_counter() - t)
    d, i = statistics.median(secs["detect"]), statistics.median(secs["index"])
    return {"detect_images_per_s": images / d, "index_images_per_s": images / i, "index_overhead": i / d - 1}


def run(args, work: Path, save_owl, classes) -> dict:
    """The section: `save_owl(kind, folder)` writes the full-size random checkpoint."""
    from ovdet import Detector

    folder = save_owl(args.owl, work / args.owl)
    precision = "bf16" if args.device == "cpu" else "fp16"
    detector = Detector.from_pretrained(str(folder), precision=precision, device=args.device, cache_text=False,
                                        batch_size=args.batch)
    out: dict = {"architecture": args.owl, "precision": precision, "regions_per_image": REGIONS_PER_IMAGE,
                 "cpu_threads": os.environ.get("OMP_NUM_THREADS", str(args.threads))}
    out.update(indexing_overhead(detector, work, args.search_images, args.reps, classes))
    for rows in (int(r) for r in args.search_rows.split(",") if r):
        out.update(query_latency(detector, work, rows, args.reps))
    return out
