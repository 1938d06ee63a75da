"""Cross-request batching: one worker thread owns the models; requests wait in a queue.

The worker takes the first waiting job, then gathers more for up to `wait_s` (or until
`max_batch` jobs), and runs them together:
  - detect jobs on a backend whose image pass is vocabulary-free (OWL, CLIP regions): ONE
    `Detector.encode` pass over all their images, then each job is scored against its own
    class embeddings (`Detector.detect_encoded`; the vocabulary encoder keeps recent
    vocabularies in an LRU, so a repeated vocabulary costs no text pass);
  - detect jobs on other backends (YOLO-World fuses the text into its image pass): one
    `detect_batch` per distinct (vocabulary, negatives, threshold);
  - classify jobs: one CLIP image pass (`Classifier.embed_images`), then each job's softmax.
Every job gets its own result or exception: one bad job never fails the others.

All model calls happen on the worker thread, so the models need no locks.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .metrics import Metrics

log = logging.getLogger("uvicorn.error")  # shown with uvicorn's own messages


class QueueFull(Exception):
    """More than `max_queue` jobs are waiting."""


@dataclass
class Job:
    """One image of one request. kind: "detect" or "classify"; classes: what the detector or
    classifier takes (the server sends a detect job's vocabulary already validated, an
    `ovdet.vocabulary.ResolvedClasses`); negatives None: the detector's configured ones;
    image: an `ovdet.io.LoadedImage` (an upload as decoded) or an RGB uint8 (H, W, 3) array;
    masks: segment the detections (the detector's masker; its image pass runs once per image)."""

    kind: str
    image: Any
    classes: Any
    negatives: tuple[str, ...] | None = None
    threshold: float | None = None
    masks: bool = False
    future: Future = field(default_factory=Future)
    waiting: bool = False  # counted in the batcher's pending jobs


_STOP = object()


class Batcher:
    def __init__(self, detector: Any, classifier: Any = None, max_batch: int = 8, wait_s: float = 0.01,
                 max_queue: int = 64, metrics: Metrics | None = None):
        self.detector = detector
        self.classifier = classifier
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0  # submitted and not yet running (queued or being gathered)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._batch_seconds = 0.0  # exponential average, for Retry-After

    # -- requests side (event loop threads) --------------------------------------------------
    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, job: Job) -> Future:
        """Queue a job; raises `QueueFull` when `max_queue` jobs already wait, RuntimeError
        once closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is stopped")
            if self._pending >= self.max_queue:
                raise QueueFull(f"{self._pending} requests are waiting for the model")
            self._pending += 1
            job.waiting = True
            self.metrics.queue_depth.set(self._pending)
        # a request that gives up (timeout) frees its place in the queue at once
        job.future.add_done_callback(lambda _: self._release([job]))
        self._queue.put(job)
        return job.future

    def _release(self, jobs: list[Job]) -> None:
        """Jobs leave the waiting count (once each): taken by the worker, or cancelled."""
        with self._lock:
            for job in jobs:
                if job.waiting:
                    job.waiting = False
                    self._pending -= 1
            self.metrics.queue_depth.set(self._pending)

    def retry_after(self) -> int:
        """Seconds a client should wait before retrying: the time to work through the queue."""
        batches = self._pending / self.max_batch + 1
        return max(1, round(batches * max(self._batch_seconds, self.wait_s)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ovdet-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every queued job, then end the worker thread."""
        with self._lock:
            self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- worker thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True  # run what was gathered, then leave
                    break
                batch.append(job)
            self._release(batch)
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        # jobs whose request gave up (timeout, client gone) are cancelled: skip them
        jobs = [j for j in batch if j.future.set_running_or_notify_cancel()]
        for kind, run in (("detect", self._detect), ("classify", self._classify)):
            group = [j for j in jobs if j.kind == kind]
            if not group:
                continue
            start = time.perf_counter()
            try:
                run(group)
            except Exception as exc:  # noqa: BLE001 - a failed pass answers its jobs, never the worker
                log.exception("model pass failed")
                for j in group:
                    if not j.future.done():
                        j.future.set_exception(exc)
            seconds = time.perf_counter() - start
            self.metrics.batch_seconds.labels(kind).observe(seconds)
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds if self._batch_seconds else seconds

    def _detect(self, jobs: list[Job]) -> None:
        det = self.detector
        # with a masker, each job says whether it wants masks (the default would segment all)
        masking = (lambda job_masks: {"masks": job_masks}) if getattr(det, "masker", None) is not None else \
            (lambda job_masks: {})
        if det.splits_image_pass:
            self.metrics.batch_size.labels("detect").observe(len(jobs))
            encoded = det.encode([j.image for j in jobs])  # one image-tower pass for all vocabularies
            for job, features in zip(jobs, encoded):
                _settle(job, lambda: det.detect_encoded([features], job.classes, job.threshold, job.negatives,
                                                        **masking(job.masks))[0])
            return
        groups: dict[tuple, list[Job]] = defaultdict(list)
        for j in jobs:
            groups[(j.classes, j.negatives, j.threshold, j.masks)].append(j)
        for (classes, negatives, threshold, masks), group in groups.items():
            self.metrics.batch_size.labels("detect").observe(len(group))
            try:
                results = det.detect_batch([j.image for j in group], classes, threshold, batch_size=len(group),
                                           negatives=negatives, **masking(masks))
            except Exception as exc:  # noqa: BLE001 - this vocabulary's jobs fail, the others go on
                for j in group:
                    j.future.set_exception(exc)
                continue
            for j, res in zip(group, results):
                j.future.set_result(res)

    def _classify(self, jobs: list[Job]) -> None:
        if self.classifier is None:
            raise RuntimeError("no classifier is loaded")
        self.metrics.batch_size.labels("classify").observe(len(jobs))
        embeds = self.classifier.embed_images([j.image for j in jobs])
        for i, job in enumerate(jobs):
            _settle(job, lambda: self.classifier.classify_embedded(embeds[i : i + 1], job.classes)[0])


def _settle(job: Job, compute) -> None:
    """Set the job's result from `compute()`, or the exception it raised."""
    try:
        job.future.set_result(compute())
    except Exception as exc:  # noqa: BLE001 - reported to this request only
        job.future.set_exception(exc)
