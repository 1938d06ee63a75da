"""A background stage for `ovdet video`: drawing and encoding overlap with detection.

`ovdet video` runs three stages at once: the `FrameReader` thread decodes frames ahead, the
main thread runs the detector (torch releases the GIL inside its kernels), and an
`OutputThread` draws boxes and encodes the video / writes the JSONL lines (OpenCV releases the
GIL while it encodes). On a 720p file drawing and encoding cost about a tenth of a fast
detector's time per frame; done in line they would cut the frame rate by that much.

Records are written in the order they are put, by one thread. An output error (disk full,
encoder refused) is raised in the caller at its next `put` or at `close`; records queued
before a stop or an interrupt are all written by `close`, so no finished frame is lost.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

_DONE = object()  # end of the records


class OutputThread:
    """Calls `handle(record)` for every `put` record, in order, on a background thread.

    Args:
        handle: writes one record (e.g. draws a frame's boxes and encodes it).
        queue_size: records waiting at most; `put` blocks beyond it, so a slow disk slows the
            detector down instead of filling memory with decoded frames.
    """

    def __init__(self, handle: Callable[[Any], None], queue_size: int = 8, name: str = "ovdet-writer"):
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self._error: BaseException | None = None
        self._closed = False
        self.written = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is _DONE:
                return
            if self._error is not None:
                continue  # failed: keep draining so that `put` never blocks on a dead writer
            try:
                self._handle(record)
                self.written += 1
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _enqueue(self, item: Any) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                self._check()

    def put(self, record: Any) -> None:
        """Queue a record for writing; raises the error an earlier record's writing hit."""
        if self._closed:
            raise RuntimeError("OutputThread is closed")
        self._check()
        self._enqueue(record)

    def close(self) -> None:
        """Write every queued record, stop the thread, then raise the first writing error if
        there was one. Idempotent."""
        if not self._closed:
            self._closed = True
            self._enqueue(_DONE)
            self._thread.join()
        self._check()


__all__ = ["OutputThread"]
