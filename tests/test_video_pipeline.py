"""The writer stage of `ovdet video`: records written in order on another thread, while the
caller goes on; errors reach the caller; nothing queued is lost at close."""

from __future__ import annotations

import threading

import pytest

from ovdet.errors import OvdetError
from ovdet.video.pipeline import OutputThread


def test_records_are_written_in_order_on_another_thread_while_the_caller_goes_on():
    release = threading.Event()
    written, threads = [], set()

    def handle(record):
        release.wait(5)  # the writer is busy (encoding) ...
        threads.add(threading.current_thread().name)
        written.append(record)

    out = OutputThread(handle, queue_size=4)
    for i in range(3):
        out.put(i)  # ... and the caller is not held up by it
    assert written == []
    release.set()
    out.close()
    assert written == [0, 1, 2] and out.written == 3
    assert threads == {"ovdet-writer"} and threading.current_thread().name not in threads
    out.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        out.put(3)


def test_a_full_queue_blocks_the_caller_instead_of_growing():
    release = threading.Event()
    out = OutputThread(lambda r: release.wait(5), queue_size=1)
    out.put(0)  # taken by the writer, which then blocks
    out.put(1)  # fills the queue
    blocked = threading.Thread(target=out.put, args=(2,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # bounded: decoded frames do not pile up in memory
    release.set()
    blocked.join(5)
    out.close()
    assert out.written == 3


def test_an_output_error_reaches_the_caller_and_earlier_records_stay_written():
    written = []

    def handle(record):
        if record == 2:
            raise OvdetError("disk full")
        written.append(record)

    out = OutputThread(handle, queue_size=2)
    with pytest.raises(OvdetError, match="disk full"):
        for i in range(1000):  # the error surfaces at a later put (or at close at the latest)
            out.put(i)
    with pytest.raises(OvdetError, match="disk full"):
        out.close()
    assert written == [0, 1]


def test_close_writes_everything_queued():
    written = []
    out = OutputThread(written.append, queue_size=64)
    for i in range(50):
        out.put(i)
    out.close()
    assert written == list(range(50))
