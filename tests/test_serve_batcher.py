"""The two-phase detector API (`Detector.encode` + `detect_encoded`) and the cross-request
`Batcher` of `ovdet serve`, without HTTP."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ovdet import Detector
from ovdet.adapters import to_records
from ovdet.errors import VocabularyError
from ovdet.io import load_image
from ovdet.serve.batcher import Batcher, Job, QueueFull


@pytest.fixture(scope="module")
def owl(tiny_owlv2):
    return Detector.from_pretrained(tiny_owlv2, precision="fp32", threshold=0.05)


@pytest.fixture(scope="module")
def photos(chelsea_path, astronaut_path):
    return [load_image(chelsea_path), load_image(astronaut_path), load_image(chelsea_path)[::-1].copy()]


def assert_same(a, b):
    """Detections equal up to float noise of a different batch composition."""
    ra, rb = to_records(a), to_records(b)
    assert [r["class_name"] for r in ra] == [r["class_name"] for r in rb]
    for x, y in zip(ra, rb):
        assert np.allclose(x["box"], y["box"], atol=0.02) and abs(x["score"] - y["score"]) < 1e-4


def test_encode_then_score_equals_detect_batch_owl(owl, photos):
    vocabularies = [["cat", "dog"], ["person", "rocket", "flag"], ["cat"]]
    encoded = owl.encode(photos)  # one pass for all three images
    assert len(encoded) == 3 and owl.splits_image_pass
    for image, features, vocab in zip(photos, encoded, vocabularies):
        got = owl.detect_encoded([features], vocab)[0]
        want = owl.detect_batch([image], vocab)[0]
        assert len(want) > 0
        assert got.class_names == tuple(vocab)
        assert_same(got, want)
    # the batched call scores several images with one vocabulary, like detect_batch
    both = owl.detect_encoded(encoded[:2], "cat,dog", threshold=0.1, negatives="toy")
    for got, want in zip(both, owl.detect_batch(photos[:2], "cat,dog", threshold=0.1, negatives="toy")):
        assert_same(got, want)


def test_encode_then_score_equals_detect_batch_clip_regions(tiny_clip, photos):
    det = Detector.from_pretrained(tiny_clip, precision="fp32", threshold=0.0)  # CLIP + sliding windows
    assert det.splits_image_pass
    encoded = det.encode(photos[:2])
    for image, features in zip(photos[:2], encoded):
        got, want = det.detect_encoded([features], ["cat", "dog"])[0], det.detect(image, ["cat", "dog"])
        assert len(want) > 0
        assert_same(got, want)


def test_batcher_one_image_pass_for_different_vocabularies(owl, photos):
    calls = []
    original = owl.encode

    class Counting:  # the same detector, counting image passes
        def __getattr__(self, name):
            return getattr(owl, name)

        def encode(self, images):
            calls.append(len(images))
            return original(images)

    batcher = Batcher(Counting(), max_batch=8, wait_s=0.5)
    vocabularies = [("cat",), ("dog", "person"), ("rocket",), ("cat", "flag")]
    jobs = [Job("detect", photos[i % 3], v, threshold=0.05) for i, v in enumerate(vocabularies)]
    for job in jobs:  # submitted before the worker starts: they form one batch
        batcher.submit(job)
    batcher.start()
    results = [j.future.result(timeout=60) for j in jobs]
    batcher.stop()
    assert calls == [4]
    for job, res in zip(jobs, results):
        assert res.class_names == job.classes
        assert_same(res, owl.detect(job.image, job.classes, threshold=0.05))
    assert batcher.metrics.registry.get_sample_value("ovdet_batch_size_sum", {"kind": "detect"}) == 4


def test_batcher_groups_by_vocabulary_when_the_image_pass_needs_it(owl, photos):
    """YOLO-World encodes the vocabulary into its image pass: jobs are grouped per vocabulary."""
    batches = []

    class VocabularyBound:
        splits_image_pass = False

        def detect_batch(self, images, classes, threshold=None, batch_size=None, negatives=None):
            batches.append((tuple(classes), len(images)))
            return owl.detect_batch(images, classes, threshold, batch_size, negatives)

    batcher = Batcher(VocabularyBound(), max_batch=8, wait_s=0.5)
    jobs = [Job("detect", photos[0], ("cat",)), Job("detect", photos[1], ("dog",)), Job("detect", photos[2], ("cat",))]
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    results = [j.future.result(timeout=60) for j in jobs]
    batcher.stop()
    assert sorted(batches) == [(("cat",), 2), (("dog",), 1)]
    for job, res in zip(jobs, results):
        assert_same(res, owl.detect(job.image, job.classes))


def test_batcher_isolates_failures_queue_limit_and_cancellation(owl, photos):
    gate, entered = threading.Event(), threading.Event()
    original = owl.encode

    class Gated:
        def __getattr__(self, name):
            return getattr(owl, name)

        def encode(self, images):
            entered.set()
            gate.wait(30)
            return original(images)

    batcher = Batcher(Gated(), max_batch=4, wait_s=0.0, max_queue=2)
    batcher.start()
    first = batcher.submit(Job("detect", photos[0], ("cat",)))
    assert entered.wait(30)  # the worker holds the first job
    bad = batcher.submit(Job("detect", photos[1], ("cat", "CAT")))  # duplicate: fails alone
    cancelled = batcher.submit(Job("detect", photos[1], ("dog",)))
    with pytest.raises(QueueFull):
        batcher.submit(Job("detect", photos[1], ("dog",)))
    assert cancelled.cancel()  # a request that gave up frees its place at once
    assert batcher.pending == 1
    replacement = batcher.submit(Job("detect", photos[0], ("dog",)))
    gate.set()
    assert replacement.result(timeout=60).class_names == ("dog",)
    assert len(first.result(timeout=60).class_names) == 1
    with pytest.raises(VocabularyError):
        bad.result(timeout=60)
    good = batcher.submit(Job("detect", photos[2], ("dog",)))  # the batcher keeps working
    assert good.result(timeout=60).class_names == ("dog",)
    batcher.stop()
    assert not batcher.alive
    with pytest.raises(RuntimeError):
        batcher.submit(Job("detect", photos[0], ("cat",)))


def test_batcher_with_a_real_yolo_world_groups_per_vocabulary(tmp_path, tiny_clip512):
    """YOLO-World writes the vocabulary into its network: no two-phase split, so the batcher
    runs one pass per vocabulary, and each answer equals the library's."""
    import torch

    from ovdet.backends.yolo import YoloWorldBackend, ultralytics_offline
    from ovdet.config import load_config

    ultralytics_offline()
    from ultralytics import YOLOWorld

    torch.manual_seed(0)
    pt = tmp_path / "yolov8s-worldv2-random.pt"
    YOLOWorld("yolov8s-worldv2.yaml").save(str(pt))  # random weights from ultralytics' own config
    backend = YoloWorldBackend.load(pt, tiny_clip512, torch.device("cpu"), torch.float32, imgsz=320, conf=0.0)
    det = Detector(backend, load_config("yolo-world-s", weights=str(pt), text_weights=str(tiny_clip512), threshold=0.0))
    assert not det.splits_image_pass
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(3)]
    batcher = Batcher(det, max_batch=8, wait_s=0.5)
    jobs = [Job("detect", images[0], ("cat", "dog")), Job("detect", images[1], ("bus",)),
            Job("detect", images[2], ("cat", "dog"))]
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    results = [j.future.result(timeout=120) for j in jobs]
    batcher.stop()
    reg = batcher.metrics.registry
    assert reg.get_sample_value("ovdet_batch_size_count", {"kind": "detect"}) == 2  # two vocabularies, two passes
    assert reg.get_sample_value("ovdet_batch_size_sum", {"kind": "detect"}) == 3
    for job, res in zip(jobs, results):
        assert res.class_names == job.classes and len(res) > 0
        assert_same(res, det.detect(job.image, job.classes))
