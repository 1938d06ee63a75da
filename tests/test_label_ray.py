"""`ovdet label --engine ray`: on a local Ray with 2 CPU workers, the annotations equal the local
engine's (tiny model, real photos). Ray starts and stops inside the test, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import ovdet
from ovdet.label import label

ray = pytest.importorskip("ray", reason="Ray Data is the optional extra ovdet[ray] (in .[test])")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _all_annotations(out: Path) -> dict:
    data = json.loads((out / "coco" / "train.json").read_text())
    return {"images": data["images"], "annotations": data["annotations"], "categories": data["categories"]}


def test_ray_equals_local(local_ray, shared_data, tiny_owlv2, tmp_path):
    images = sorted(str(p) for p in (shared_data / "coco8" / "images").glob("*/*.jpg"))[:5]
    onto = {"car": ["car", "automobile"], "person": ["person"]}
    common = dict(model=tiny_owlv2, threshold=0.2, batch_size=2, formats="coco,yolo", progress=False, precision="fp32")
    # each actor runs torch on its one CPU; the local run does the same, because CPU matmuls
    # sum in another order with another thread count (boxes then differ in the 2nd decimal)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = label(images, onto, tmp_path / "local", engine="local", **common)
    finally:
        torch.set_num_threads(threads)
    on_ray = label(images, onto, tmp_path / "ray", engine="ray", workers=2, **common)
    assert ray.is_initialized()  # a Ray the caller started is left running for the caller
    # the actors ran this checkout's ovdet, not another installed copy
    assert on_ray["run"]["worker_ovdet"] == [str(Path(ovdet.__file__).resolve().parent)]
    assert on_ray["run"]["engine"] == "ray" and on_ray["run"]["workers"] == 2 and on_ray["run"]["computed"] == 5
    assert _all_annotations(tmp_path / "ray") == _all_annotations(tmp_path / "local")
    assert local["boxes"] > 0 and on_ray["classes"] == local["classes"]
    for p in (tmp_path / "local" / "yolo" / "labels" / "train").iterdir():
        assert (tmp_path / "ray" / "yolo" / "labels" / "train" / p.name).read_text() == p.read_text()


def test_worker_environment(monkeypatch):
    from ovdet.label.ray_engine import worker_env

    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = worker_env(joining=False)
    root = str(Path(ovdet.__file__).resolve().parent.parent)
    assert local["PYTHONPATH"].split(os.pathsep)[0] == root and "/elsewhere" in local["PYTHONPATH"]
    assert local["HF_HUB_OFFLINE"] == "1"
    joined = worker_env(joining=True)  # a cluster's workers have their own installed ovdet
    assert "PYTHONPATH" not in joined and joined["HF_HUB_OFFLINE"] == "1"


def test_worker_errors_become_one_line():
    from ovdet.errors import WeightsNotFoundError
    from ovdet.label.ray_engine import worker_user_error

    inner = WeightsNotFoundError("no weights for owlv2-b16 on this node")

    class Wrapped(RuntimeError):  # the shape of Ray's wrappers: the actor's exception as `cause`
        def __init__(self, cause):
            super().__init__("Traceback (most recent call last): ...")
            self.cause = cause

    try:
        try:
            raise Wrapped(inner)
        except Wrapped as exc:
            raise RuntimeError("dataset execution failed") from exc
    except RuntimeError as outer:
        assert worker_user_error(outer) is inner
    assert worker_user_error(RuntimeError("a bug")) is None
