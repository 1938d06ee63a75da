"""The Ray Data engine: chunks of image paths -> `map_batches` over an actor pool, each actor
holding one detector (loaded once) -> records streamed back to the driver, which writes the
shards and, at the end, the same export as the local engine.

    rows {"chunk": k, "paths": JSON list}  --map_batches(LabelActor, batch_size=1,
        compute=ActorPoolStrategy(size=workers), num_gpus=gpus_per_worker)-->
    rows {"chunk": k, "records": JSON list, "worker": ovdet's location in the actor}

One row is one chunk, i.e. one forward batch of the same images the local engine would batch
together: Ray's own block sizes never change which images share a batch. Ray is imported only
here (optional extra `ovdet[ray]`).

Where Ray runs:
  - no address (and no $RAY_ADDRESS): a local Ray is started for the job and shut down after;
    the actors get the driver's PYTHONPATH (this ovdet first) and offline settings;
  - `address` ("auto", "ray://head:10001", or $RAY_ADDRESS): the job joins that cluster; its
    workers must have ovdet installed and the weights on a path they can read (see README).
  - a Ray already initialised in this process (e.g. by a notebook or a test) is used as is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

from ..errors import OvdetError, first_line

# passed to the actors when the driver has them: the actors must stay as offline as the driver
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "OVDET_WEIGHTS", "OVDET_CACHE",
                 "YOLO_OFFLINE", "YOLO_AUTOINSTALL")


class RayMissingError(OvdetError, ImportError):
    """--engine ray without Ray Data installed."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayMissingError('--engine ray needs Ray Data: pip install "ovdet[ray]" (or "ray[data]")') from exc
    return ray


class LabelActor:
    """Ray Data callable class: builds a `LabelWork` (and its detector) once per actor."""

    def __init__(self, config, ontology: dict, threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        import ovdet

        from .work import LabelWork

        self.work = LabelWork(config, ontology)
        self.where = str(Path(ovdet.__file__).resolve().parent)

    def __call__(self, batch):
        import numpy as np

        out_records = []
        for paths_json in batch["paths"]:
            out_records.append(json.dumps(self.work(json.loads(str(paths_json)))))
        return {"chunk": np.asarray(batch["chunk"]), "records": np.asarray(out_records, dtype=object),
                "worker": np.asarray([self.where] * len(out_records), dtype=object)}


def worker_user_error(exc: BaseException) -> BaseException | None:
    """The `OvdetError` (missing weights on a node, bad config...) behind an exception Ray
    raised in the driver, if any: Ray wraps an actor's exception (RayTaskError, Ray Data's
    UserCodeException) and keeps it as `cause` or `__cause__`."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError(X) is also an X: its message is a traceback
        if isinstance(e, OvdetError) and cause is None:
            return e
        todo.extend([e.__context__, e.__cause__, cause])
    return None


def worker_env(joining: bool) -> dict[str, str]:
    """Environment variables for the actors: offline switches always, and (local Ray only) a
    PYTHONPATH that puts this driver's ovdet first, so workers run the same code."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    if not joining:
        import ovdet

        root = str(Path(ovdet.__file__).resolve().parent.parent)
        rest = os.environ.get("PYTHONPATH", "")
        env["PYTHONPATH"] = os.pathsep.join([root, *(p for p in rest.split(os.pathsep) if p and p != root)])
    return env


def quiet_logging() -> dict:
    """`ray.init` arguments that keep Ray's logging out of the terminal: its Python loggers at
    ERROR, no forwarding of the workers' output to the driver, and the C++ core's log lines
    (`E ... core_worker...`) at FATAL only (through its environment variable, set unless the
    user chose a level)."""
    import logging

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    return {"logging_level": logging.ERROR, "log_to_driver": False}



def start_ray(ray, address: str | None, quiet: bool) -> bool:
    """Join the cluster at `address` ($RAY_ADDRESS when None), or start a local Ray without a
    dashboard, unless Ray is already running; True when this call started it (so the caller
    shuts it down). `quiet`: Ray's own log lines stay out of the terminal."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    logs = quiet_logging() if quiet else {}
    if address:
        ray.init(address=address, runtime_env={"env_vars": worker_env(joining=True)}, **logs)
    else:
        ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": worker_env(joining=False)}, **logs)
    return True


def run_ray(config, ontology: dict, todo: Sequence[tuple[int, list[str]]], on_chunk: Callable[[int, list[dict]], None],
            workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
            address: str | None = None, quiet: bool = True) -> set[str]:
    """Label `todo` [(chunk, paths)] on Ray; `on_chunk(chunk, records)` is called in the driver
    as each chunk comes back (in completion order). Returns the ovdet locations the actors ran.
    `quiet` (the CLI without --debug): Ray's own log lines stay out of the terminal, where
    they would interleave with the progress bar (errors still end the run as exceptions)."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None  # actors join the same cluster
    started = start_ray(ray, address, quiet)
    workers_seen: set[str] = set()
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ovdet's own bar counts images, with rate and ETA
        ctx.execution_options.preserve_order = False
        if not todo:
            return workers_seen
        rows = [{"chunk": k, "paths": json.dumps(paths)} for k, paths in todo]
        workers = min(workers, len(rows))  # an actor without a chunk would only load a model
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), max(1, 4 * workers)))
        labelled = ds.map_batches(
            LabelActor,
            fn_constructor_kwargs={"config": config, "ontology": ontology,
                                   "threads": max(1, int(cpus_per_worker)) if not gpus_per_worker else None},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=gpus_per_worker or None,
            num_cpus=cpus_per_worker,
            runtime_env={"env_vars": worker_env(joining=bool(address))},
        )
        try:
            for row in labelled.iter_rows():
                workers_seen.add(str(row["worker"]))
                on_chunk(int(row["chunk"]), json.loads(row["records"]))
        except Exception as exc:
            user_error = worker_user_error(exc)
            if user_error is None:
                raise
            raise OvdetError(f"ovdet: error on a Ray worker: {first_line(user_error)}") from exc
    finally:
        if started:
            ray.shutdown()
    return workers_seen
