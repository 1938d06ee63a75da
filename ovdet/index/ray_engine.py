"""`ovdet index --engine ray`: chunks of image files -> Ray Data actors, each holding one
detector, encoding them -> rows streamed back to the driver, which appends them to the index
(only the driver writes, so the store's resume protocol is the local engine's).

    rows {"chunk": k, "files": JSON [(path, size, mtime_ns)]}  --map_batches(IndexActor,
        batch_size=1, compute=ActorPoolStrategy(size=workers))-->  {"chunk": k, "rows": pickled EncodedChunk}

Ray is started, joined or reused as for `ovdet label --engine ray` (`ovdet.label.ray_engine`).
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Callable, Sequence

from ..errors import OvdetError, first_line
from ..label.ray_engine import import_ray, start_ray, worker_env, worker_user_error


class IndexActor:
    """Ray Data callable class: builds the detector once per actor."""

    def __init__(self, config, keep: int, threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        from ..detector import Detector

        self.detector = Detector.from_config(config)
        self.keep = keep

    def __call__(self, batch):
        import numpy as np

        from .rows import encode_chunk

        out = [pickle.dumps(encode_chunk(self.detector, [tuple(f) for f in json.loads(str(files))], self.keep))
               for files in batch["files"]]
        return {"chunk": np.asarray(batch["chunk"]), "rows": np.asarray(out, dtype=object)}


def index_on_ray(config, chunks: Sequence[Sequence[tuple[str, int, int]]], keep: int, write: Callable,
                 workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
                 address: str | None = None, quiet: bool = True) -> None:
    """Encode `chunks` on Ray; `write(EncodedChunk)` is called in the driver as each returns."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None  # actors join the same cluster
    started = start_ray(ray, address, quiet)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        rows = [{"chunk": k, "files": json.dumps([list(f) for f in chunk])} for k, chunk in enumerate(chunks)]
        workers = max(1, min(workers, len(rows)))
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), max(1, 4 * workers)))
        encoded = ds.map_batches(
            IndexActor,
            fn_constructor_kwargs={"config": config, "keep": keep,
                                   "threads": max(1, int(cpus_per_worker)) if not gpus_per_worker else None},
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus_per_worker or None,
            num_cpus=cpus_per_worker, runtime_env={"env_vars": worker_env(joining=bool(address))},
        )
        try:
            for row in encoded.iter_rows():
                write(pickle.loads(row["rows"]))
        except Exception as exc:
            user_error = worker_user_error(exc)
            if user_error is None:
                raise
            raise OvdetError(f"ovdet: error on a Ray worker: {first_line(user_error)}") from exc
    finally:
        if started:
            ray.shutdown()
