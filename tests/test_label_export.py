"""`ovdet label` end to end on real photos with a tiny random OWLv2: every format read back by
the tool that owns it, box counts and coordinates agreeing across formats, ontology merging,
splits, linked/copied images, skipped images, the review sheet."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ovdet.cli.app import main
from ovdet.label import label
from ovdet.structures import Detections

# Label Studio's documented task import format with pre-annotations (labelstud.io/guide/predictions,
# /guide/task_format): the fields it reads for a rectangle prediction
LABEL_STUDIO_TASKS_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["data", "predictions"],
        "properties": {
            "data": {"type": "object", "required": ["image"], "properties": {"image": {"type": "string"}}},
            "predictions": {"type": "array", "items": {
                "type": "object",
                "required": ["model_version", "score", "result"],
                "properties": {
                    "model_version": {"type": "string"},
                    "score": {"type": "number"},
                    "result": {"type": "array", "items": {
                        "type": "object",
                        "required": ["id", "type", "from_name", "to_name", "original_width", "original_height",
                                     "value"],
                        "properties": {
                            "id": {"type": "string"},
                            "type": {"const": "rectanglelabels"},
                            "from_name": {"type": "string"}, "to_name": {"type": "string"},
                            "original_width": {"type": "integer", "minimum": 1},
                            "original_height": {"type": "integer", "minimum": 1},
                            "image_rotation": {"type": "number"},
                            "score": {"type": "number", "minimum": 0, "maximum": 1},
                            "value": {"type": "object", "required": ["x", "y", "width", "height", "rectanglelabels"],
                                      "properties": {
                                          "x": {"type": "number", "minimum": 0, "maximum": 100},
                                          "y": {"type": "number", "minimum": 0, "maximum": 100},
                                          "width": {"type": "number", "minimum": 0, "maximum": 100},
                                          "height": {"type": "number", "minimum": 0, "maximum": 100},
                                          "rotation": {"type": "number"},
                                          "rectanglelabels": {"type": "array", "minItems": 1,
                                                              "items": {"type": "string"}}}},
                        }}},
                }}},
        },
    },
}


@pytest.fixture(scope="module")
def coco8_images(shared_data) -> Path:
    return shared_data / "coco8" / "images"


@pytest.fixture(scope="module")
def export(tiny_owlv2, coco8_images, tmp_path_factory):
    """One labelling run, all formats, a train/val split."""
    out = tmp_path_factory.mktemp("label") / "dataset"
    onto = {"car": ["car", "automobile"], "person": ["person", "pedestrian"], "dog": {"prompts": ["dog"], "threshold": 0.5}}
    report = label(coco8_images, onto, out, formats="coco,yolo,voc,labelstudio", model=tiny_owlv2,
                   split="train=0.5,val=0.5", seed=1, review=4, threshold=0.25, max_detections=15, progress=False)
    return out, report


def _coco_boxes(out: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{file name: [(class, xyxy)]} read with pycocotools, in annotation order."""
    from pycocotools.coco import COCO

    boxes = {}
    for split in ("train", "val"):
        coco = COCO(str(out / "coco" / f"{split}.json"))
        names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
        for img in coco.loadImgs(coco.getImgIds()):
            anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img["id"])), key=lambda a: a["id"])
            boxes[img["file_name"]] = [(names[a["category_id"]], np.array(a["bbox"][:2] + [a["bbox"][0] + a["bbox"][2],
                                        a["bbox"][1] + a["bbox"][3]])) for a in anns]
    return boxes


def test_coco_read_by_pycocotools(export):
    from pycocotools.coco import COCO

    out, report = export
    total = 0
    for split in ("train", "val"):
        data = json.loads((out / "coco" / f"{split}.json").read_text())
        assert [c["name"] for c in data["categories"]] == ["car", "person", "dog"]
        assert [c["id"] for c in data["categories"]] == [1, 2, 3]  # ontology order
        coco = COCO(str(out / "coco" / f"{split}.json"))
        assert len(coco.getImgIds()) == report["splits"][split] == 4
        for img in coco.loadImgs(coco.getImgIds()):
            assert img["width"] > 0 and img["height"] > 0
        anns = coco.loadAnns(coco.getAnnIds())
        for a in anns:
            assert a["iscrowd"] == 0 and 0 < a["score"] <= 1
            assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], rel=1e-3, abs=0.05)
        # the annotations are valid detection results for the same images
        res = coco.loadRes([{k: a[k] for k in ("image_id", "category_id", "bbox", "score")} for a in anns])
        assert len(res.getAnnIds()) == len(anns)
        total += len(anns)
    assert total == report["boxes"] > 0
    assert sum(v["boxes"] for v in report["classes"].values()) == total
    # the per-class threshold of dog (0.5) is above the run's 0.25
    assert all(a["score"] > 0.5 for s in ("train", "val") for a in json.loads((out / "coco" / f"{s}.json").read_text())
               ["annotations"] if a["category_id"] == 3)


# ultralytics' Ray Tune callback warns when Ray is installed but no Tune session runs
@pytest.mark.filterwarnings("ignore:`get_trial_id`:UserWarning")
def test_yolo_checked_and_trained_by_ultralytics(export, tmp_path):
    from ovdet.backends.yolo import ultralytics_offline

    out, report = export
    ultralytics_offline()
    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(str(out / "yolo" / "data.yaml"))
    assert info["nc"] == 3 and list(info["names"].values()) == ["car", "person", "dog"]
    assert Path(info["train"]) == (out / "yolo" / "images" / "train").resolve()
    assert Path(info["val"]) == (out / "yolo" / "images" / "val").resolve()
    images = sorted((out / "yolo" / "images").glob("*/*"))
    assert len(images) == 8 and all(p.is_symlink() for p in images)  # linked, not re-encoded
    for p in images:
        assert p.read_bytes() == Path(os.readlink(p)).read_bytes()
        assert (out / "yolo" / "labels" / p.parent.name / f"{p.stem}.txt").is_file()

    model = YOLO("yolov8n.yaml")  # randomly initialised
    model.train(data=str(out / "yolo" / "data.yaml"), epochs=1, imgsz=64, batch=4, device="cpu", workers=0,
                plots=False, amp=False, project=str(tmp_path), name="run", exist_ok=True, verbose=False)
    assert (tmp_path / "run" / "weights" / "last.pt").is_file()
    assert (tmp_path / "run" / "results.csv").read_text().count("\n") >= 2  # a header and one epoch


def test_formats_agree(export):
    """Same boxes, classes and counts in COCO, YOLO, VOC (supervision's reader) and Label Studio."""
    import supervision as sv
    import yaml

    out, report = export
    reference = _coco_boxes(out)
    assert sum(len(v) for v in reference.values()) == report["boxes"]
    sizes = {}
    for split in ("train", "val"):
        for img in json.loads((out / "coco" / f"{split}.json").read_text())["images"]:
            sizes[img["file_name"]] = (img["width"], img["height"])

    # YOLO: normalised cx cy w h
    names = yaml.safe_load((out / "yolo" / "data.yaml").read_text())["names"]
    for split in ("train", "val"):
        for p in (out / "yolo" / "images" / split).iterdir():
            w, h = sizes[p.name]
            rows = [l.split() for l in (out / "yolo" / "labels" / split / f"{p.stem}.txt").read_text().splitlines()]
            assert len(rows) == len(reference[p.name])
            for row, (cls, box) in zip(rows, reference[p.name]):
                cx, cy, bw, bh = (float(v) for v in row[1:])
                got = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
                assert names[int(row[0])] == cls
                np.testing.assert_allclose(got, box, atol=0.5)

    # VOC through supervision's reader, split lists from ImageSets
    voc = sv.DetectionDataset.from_pascal_voc(str(out / "voc" / "JPEGImages"), str(out / "voc" / "Annotations"))
    assert len(voc) == 8
    for path, _, dets in voc:
        ref = reference[Path(path).name]
        assert len(dets) == len(ref)
        for box, cid, (cls, rbox) in zip(dets.xyxy, dets.class_id, ref):
            assert voc.classes[cid] == cls
            np.testing.assert_allclose(box, rbox, atol=0.5 + 1e-6)
    for split in ("train", "val"):
        stems = (out / "voc" / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        assert len(stems) == report["splits"][split]
        assert all((out / "voc" / "Annotations" / f"{s}.xml").is_file() for s in stems)
    tree = ET.parse(next((out / "voc" / "Annotations").iterdir()))
    assert tree.find("size/width") is not None and tree.find("size/height") is not None

    # Label Studio: the documented schema, names that match config.xml, percent boxes
    import jsonschema

    tasks = json.loads((out / "labelstudio" / "tasks.json").read_text())
    jsonschema.validate(tasks, LABEL_STUDIO_TASKS_SCHEMA)
    config = ET.fromstring((out / "labelstudio" / "config.xml").read_text())
    rect = config.find("RectangleLabels")
    assert config.find("Image").get("name") == rect.get("toName") == "image"
    labels = [l.get("value") for l in rect.findall("Label")]
    assert labels == ["car", "person", "dog"]
    assert len(tasks) == 8
    for t in tasks:
        assert t["data"]["image"].startswith("/data/local-files/?d=")
        name = Path(t["data"]["ovdet_path"]).name
        result = t["predictions"][0]["result"]
        assert len(result) == len(reference[name])
        for r, (cls, box) in zip(result, reference[name]):
            assert r["from_name"] == rect.get("name") and r["to_name"] == "image"
            assert r["value"]["rectanglelabels"] == [cls] and cls in labels
            w, h = r["original_width"], r["original_height"]
            v = r["value"]
            got = np.array([v["x"] * w, v["y"] * h, (v["x"] + v["width"]) * w, (v["y"] + v["height"]) * h]) / 100
            np.testing.assert_allclose(got, box, atol=0.5)


def test_report_and_review(export):
    from PIL import Image

    out, report = export
    saved = json.loads((out / "report.json").read_text())
    assert saved == report
    assert report["images"] == 8 and report["skipped"] == 0 and report["splits"] == {"train": 4, "val": 4}
    assert report["images_without_boxes"] == sum(1 for v in _coco_boxes(out).values() if not v)
    for stats in report["classes"].values():
        if stats["boxes"]:
            q = stats["score"]
            assert q["min"] <= q["p10"] <= q["p50"] <= q["p90"] <= q["max"]
    assert report["settings"]["ontology"]["classes"]["car"]["prompts"] == ["car", "automobile"]
    assert report["model"]["threshold"] == 0.25
    assert report["run"]["computed"] == 8 and report["run"]["resumed"] == 0
    assert len(report["run"]["review_images"]) == 4
    with Image.open(out / "review.jpg") as im:
        assert im.width >= 2 * 480 and im.height >= 2 * 360


class _TwoPromptDetector:
    """Stands in for a detector: on every image, "car" and "automobile" find one object with
    overlapping boxes, and "person" another; records what it was asked."""

    def __init__(self, config):
        self.config = config
        self.asked = []

    def detect_batch(self, images, classes, threshold=None, negatives=None, batch_size=None):
        self.asked.append(list(classes))
        out = []
        for im in images:
            h, w = im.shape[:2]
            out.append(Detections(xyxy=[[10, 10, 100, 100], [12, 11, 101, 98], [200, 50, 300, 150]],
                                  scores=[0.9, 0.8, 0.7], class_ids=[0, 1, 2], class_names=tuple(classes),
                                  image_size=(h, w)))
        return out


def test_two_prompts_one_class_merge(tiny_owlv2, coco8_images, tmp_path):
    from ovdet.detector import resolve_config

    det = _TwoPromptDetector(resolve_config(tiny_owlv2, threshold=0.1))
    images = sorted((coco8_images / "train").iterdir())[:2]
    report = label([str(p) for p in images], {"car": ["car", "automobile"], "person": ["person"]}, tmp_path / "out",
                   formats="coco,yolo", detector=det, progress=False)
    assert det.asked == [["car", "automobile", "person"]]
    data = json.loads((tmp_path / "out" / "coco" / "train.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["car", "person"]
    per_image = {}
    for a in data["annotations"]:
        per_image.setdefault(a["image_id"], []).append((a["category_id"], a["bbox"], a["score"]))
    assert len(per_image) == 2
    for anns in per_image.values():
        assert anns == [(1, [10.0, 10.0, 90.0, 90.0], 0.9), (2, [200.0, 50.0, 100.0, 100.0], 0.7)]
    assert report["classes"]["car"]["boxes"] == 2
    # no --split: everything in train, and data.yaml's val points at it
    import yaml

    data_yaml = yaml.safe_load((tmp_path / "out" / "yolo" / "data.yaml").read_text())
    assert data_yaml["train"] == data_yaml["val"] == "images/train"
    assert report["splits"] == {"train": 2}


def test_copy_images_skips_unreadable_exit_1(tiny_owlv2, coco8_images, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted((coco8_images / "val").iterdir())[:2]:
        shutil.copy(p, src / p.name)
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    rc = main(["label", str(src), "--out", str(out), "--classes", "cat,dog", "--model", str(tiny_owlv2),
               "--copy-images", "--format", "yolo,voc"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 2 and report["skipped"] == 1
    assert report["skipped_images"][0]["path"] == str(src / "broken.jpg")
    for p in (out / "yolo" / "images" / "train").iterdir():
        assert not p.is_symlink() and p.read_bytes() == (src / p.name).read_bytes()  # copied byte for byte
    assert len(list((out / "voc" / "JPEGImages").iterdir())) == 2
    assert not (out / "coco").exists()
