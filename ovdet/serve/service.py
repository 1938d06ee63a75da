"""The served models' state: loading them in the background, the batcher that runs requests,
and the mapping of a job's failure to the API's error codes."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ImageReadError, OvdetError, VocabularyError, first_line
from .batcher import Batcher, Job, QueueFull
from .limits import ApiError, ServeSettings
from .metrics import Metrics

log = logging.getLogger("uvicorn.error")  # shown with uvicorn's own messages


@dataclass
class ServedModels:
    """What the server runs: a `Detector`, and optionally a `Classifier` for /v1/classify
    (name: what to report for it in /v1/model)."""

    detector: Any
    classifier: Any = None
    classifier_name: str | None = None


class Service:
    """The models' state: loading, ready (a running batcher), failed or stopped."""

    def __init__(self, load: Callable[[], ServedModels], settings: ServeSettings, metrics: Metrics,
                 on_load_error: Callable[[BaseException], None] | None = None):
        self.load, self.settings, self.metrics, self.on_load_error = load, settings, metrics, on_load_error
        self.models: ServedModels | None = None
        self.batcher: Batcher | None = None
        self.error: BaseException | None = None
        self.stopping = False
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        self._loader = threading.Thread(target=self._load, name="ovdet-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        try:
            models = self.load()
            models.detector.vocabulary.memory_size = max(models.detector.vocabulary.memory_size, 256)
            batcher = Batcher(models.detector, models.classifier,
                              max_batch=self.settings.batch_for(models.detector.device),
                              wait_s=self.settings.batch_wait_ms / 1000, max_queue=self.settings.max_queue,
                              metrics=self.metrics)
            batcher.start()
            self.models, self.batcher = models, batcher
            self.metrics.ready.set(1)
            log.info("model loaded; serving")
        except BaseException as exc:  # noqa: BLE001 - reported by /readyz and the command
            self.error = exc
            log.error("cannot load the model: %s", first_line(exc))
            if self.on_load_error is not None:
                self.on_load_error(exc)

    def stop(self) -> None:
        """Stop taking jobs and finish the queued ones (in-flight requests have their answer)."""
        self.stopping = True
        self.metrics.ready.set(0)
        if self.batcher is not None:
            self.batcher.stop()

    def state(self) -> tuple[int, dict]:
        if self.stopping:
            return 503, {"error": "shutting_down", "message": "the server is shutting down"}
        if self.error is not None:
            return 503, {"error": "load_failed", "message": first_line(self.error)}
        if self.batcher is None:
            return 503, {"error": "not_ready", "message": "the model is loading"}
        if not self.batcher.alive:
            return 503, {"error": "not_ready", "message": "the model worker stopped"}
        return 200, {"status": "ready"}

    async def run(self, job: Job) -> Any:
        """Queue a job and wait for its result, within the settings' timeout."""
        status, body = self.state()
        if status != 200:
            raise ApiError(status, body["error"], body["message"])
        try:
            future = self.batcher.submit(job)
        except QueueFull as exc:
            raise ApiError(503, "queue_full", f"the server is busy ({exc}); retry later",
                           {"Retry-After": str(self.batcher.retry_after())}) from exc
        except RuntimeError as exc:
            raise ApiError(503, "shutting_down", "the server is shutting down") from exc
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.timeout)
        except asyncio.TimeoutError as exc:  # wait_for cancelled the job: the worker skips it
            raise ApiError(504, "timeout", f"no answer within {self.settings.timeout:g} s") from exc
        except (VocabularyError,) as exc:
            raise ApiError(400, "bad_classes", first_line(exc)) from exc
        except ImageReadError as exc:
            raise ApiError(400, "unreadable_image", first_line(exc)) from exc
        except OvdetError as exc:
            raise ApiError(400, "bad_request", first_line(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - a model failure answers this request only
            log.exception("request failed")
            raise ApiError(500, "internal_error", f"the model failed on this request: {first_line(exc)}") from exc
