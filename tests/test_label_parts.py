"""ovdet.label building blocks without a model: ontology, prompt merging, splits, names, sources."""

from __future__ import annotations

import numpy as np
import pytest

from ovdet.errors import ImageReadError
from ovdet.label.dataset import SplitError, assign_splits, parse_split, split_counts, unique_names
from ovdet.label.ontology import Ontology, OntologyError
from ovdet.label.sources import expand_sources
from ovdet.label.work import chunks, to_classes
from ovdet.structures import Detections


# -- ontology ----------------------------------------------------------------------------------------
def test_ontology_forms_and_order(tmp_path):
    path = tmp_path / "onto.yaml"
    path.write_text("car: [car, automobile, a sedan]\nperson: {prompts: [person, pedestrian], threshold: 0.2}\n"
                    "bicycle: bicycle\n", encoding="utf-8")
    onto = Ontology.from_yaml(path)
    assert onto.names == ("car", "person", "bicycle")
    assert onto.prompts == ("car", "automobile", "a sedan", "person", "pedestrian", "bicycle")
    assert onto.prompt_class == (0, 0, 0, 1, 1, 2)
    assert onto.thresholds(0.3) == (0.3, 0.2, 0.3)
    assert Ontology.from_dict(onto.to_dict()) == onto  # the canonical form round-trips

    nested = Ontology.from_dict({"classes": {"car": ["car"]}, "negatives": ["toy car"]})
    assert nested.negatives == ("toy car",) and nested.names == ("car",)
    assert Ontology.coerce("car, person").prompts == ("car", "person")
    assert Ontology.coerce(str(path)) == onto


@pytest.mark.parametrize("data, message", [
    ({}, "empty ontology"),
    ({"car": []}, "has no prompts"),
    ({"car": None}, "has no prompts"),
    ({"car": {"threshold": 0.2}}, "has no prompts"),
    ({"car": ["car"], "auto": ["Car"]}, "appears in classes"),
    ({"car": {"prompts": ["car"], "threshold": 1.5}}, "threshold must be in [0, 1]"),
    ({"car": {"prompts": ["car"], "thresh": 0.5}}, "unknown key"),
    ({"classes": {"car": ["car"]}, "negatives": ["car"]}, "both a negative and a prompt"),
    ({"car": ["car", ""]}, "empty or non-text prompt"),
])
def test_ontology_errors(data, message):
    with pytest.raises(OntologyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Ontology.from_dict(data)


def test_classes_with_stray_comma():
    with pytest.raises(OntologyError, match="stray comma"):
        Ontology.from_classes("car,,person")
    with pytest.raises(OntologyError, match="empty ontology"):
        Ontology.from_classes(" ")


# -- merging prompts into classes ---------------------------------------------------------------------
def test_prompts_merge_into_classes():
    # prompts: 0 car, 1 automobile (class 0), 2 person (class 1)
    xyxy = np.array([[10, 10, 100, 100], [12, 11, 101, 98], [300, 300, 400, 400], [11, 10, 99, 100]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    dets = Detections(xyxy=xyxy, scores=scores, class_ids=[0, 1, 1, 2], class_names=("car", "automobile", "person"),
                      image_size=(480, 640), raw_scores=[1.0, 2.0, 3.0, 4.0])
    merged = to_classes(dets, (0, 0, 1), ("car", "person"), (0.1, 0.1), nms_iou=0.5, max_detections=100)
    # the car/automobile boxes over one object merge into the best; the person box on the same
    # spot is another class and stays; the far automobile box stays
    assert merged.class_names == ("car", "person") and merged.image_size == (480, 640)
    assert merged.class_ids.tolist() == [0, 0, 1]
    np.testing.assert_allclose(merged.scores, [0.9, 0.7, 0.6])
    np.testing.assert_allclose(merged.raw_scores, [1.0, 3.0, 4.0])  # fields stay aligned with their boxes
    np.testing.assert_allclose(merged.xyxy[0], xyxy[0])
    # per-class thresholds: person needs > 0.65
    strict = to_classes(dets, (0, 0, 1), ("car", "person"), (0.1, 0.65), nms_iou=0.5, max_detections=100)
    assert strict.class_ids.tolist() == [0, 0]
    # NMS disabled (iou 1): nothing merges
    top2 = to_classes(dets, (0, 0, 1), ("car", "person"), (0.1, 0.1), nms_iou=1.0, max_detections=2)
    np.testing.assert_allclose(top2.scores, [0.9, 0.8])
    empty = to_classes(Detections.empty(("car",), (10, 10)), (0,), ("car",), (0.1,), 0.5, 10)
    assert len(empty) == 0 and empty.class_names == ("car",)

def test_chunks_are_fixed_runs():
    assert chunks(["a", "b", "c", "d", "e"], 2) == [(0, ["a", "b"]), (1, ["c", "d"]), (2, ["e"])]


# -- splits -------------------------------------------------------------------------------------------
def test_split_parsing():
    assert parse_split(None) == {"train": 1.0}
    assert parse_split("train=0.8,val=0.2") == {"train": 0.8, "val": 0.2}
    for bad, message in [("train=0.8,val=0.3", "sum to 1.1"), ("train=0.8,holdout=0.2", "unknown split"),
                         ("train", "NAME=FRACTION"), ("train=x", "not a number"), ("val=1", "train split is required"),
                         ("train=0.5,train=0.5", "twice")]:
        with pytest.raises(SplitError, match=message):
            parse_split(bad)


def test_split_is_exact_seeded_and_order_free():
    keys = [f"/img/{i:03d}.jpg" for i in range(101)]
    fractions = {"train": 0.7, "val": 0.2, "test": 0.1}
    a = assign_splits(keys, fractions, seed=3)
    b = assign_splits(list(reversed(keys)), fractions, seed=3)
    assert a == b
    counts = {s: list(a.values()).count(s) for s in fractions}
    assert counts == split_counts(101, fractions) and sum(counts.values()) == 101
    assert abs(counts["train"] - 70.7) < 1 and abs(counts["test"] - 10.1) < 1
    assert assign_splits(keys, fractions, seed=4) != a


def test_unique_export_names():
    names = unique_names(["/a/x.jpg", "/b/x.JPG", "/c/x.png", "/d/my photo.jpg", "/e/y.jpg"])
    assert names == {"/a/x.jpg": "x.jpg", "/b/x.JPG": "x_1.jpg", "/c/x.png": "x_2.png",
                     "/d/my photo.jpg": "my_photo.jpg", "/e/y.jpg": "y.jpg"}


# -- sources ------------------------------------------------------------------------------------------
def test_sources_folders_globs_and_lists(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for rel in ("a/1.jpg", "a/deep/2.PNG", "a/notes.md", "a/.hidden/3.jpg", "b.jpg", "c.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# my images\nb.jpg\n" + str(tmp_path / "c.jpg") + "\n\n", encoding="utf-8")
    got = expand_sources([str(tmp_path / "a"), str(tmp_path / "list.txt"), str(tmp_path / "a" / "*.jpg")])
    assert got == sorted([str(tmp_path / "a" / "1.jpg"), str(tmp_path / "a" / "deep" / "2.PNG"),
                          str(tmp_path / "b.jpg"), str(tmp_path / "c.jpg")])
    with pytest.raises(ImageReadError, match="not found"):
        expand_sources([str(tmp_path / "missing")])
    with pytest.raises(ImageReadError, match="no files match"):
        expand_sources([str(tmp_path / "*.gif")])
