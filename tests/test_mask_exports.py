"""`ovdet label` with masks: every export read back by its owner. COCO by pycocotools
(`annToMask` equals the masks), YOLO segmentation by ultralytics (dataset check, the segment
dataset's polygons, one epoch of a random yolov8n-seg), VOC SegmentationObject /
SegmentationClass PNGs, Label Studio brush RLE by label-studio-converter's decoder, and
supervision's dataset readers. The masks come from a stand-in detector (any detector whose
Detections carry masks exports them; the SAM masker is tested on its own)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdet.config import DetectorConfig
from ovdet.instance_masks import Masks
from ovdet.label import label
from ovdet.structures import Detections

SIZES = [(48, 64), (64, 48), (40, 56), (56, 40), (48, 48), (44, 60)]  # (h, w), non-square
CLASSES = ("car", "person")


def scene(k: int, h: int, w: int) -> np.ndarray:
    """(4, h, w) bool masks of image k: an ellipse, a two-part object, a block on the right and
    bottom borders, and a single pixel (too small for a polygon)."""
    rng = np.random.default_rng(k)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.integers(12, h - 12), rng.integers(12, w - 12)
    masks = np.zeros((4, h, w), bool)
    masks[0] = ((yy - cy) / 9.0) ** 2 + ((xx - cx) / 7.0) ** 2 <= 1
    masks[1, 2:9, 2:10] = True
    masks[1, 2:12, 14:18] = True
    masks[2, h - 10:, w - 8:] = True
    masks[3, int(rng.integers(0, h)), int(rng.integers(0, 6))] = True
    return masks


class MaskingDetector:
    """Stands in for a detector with a masker: boxes and masks from `scene`, keyed by size."""

    def __init__(self):
        self.config = DetectorConfig(name="stand-in", masks="stand-in-sam", threshold=0.1)

    def detect_batch(self, images, classes, threshold=None, negatives=None, batch_size=None):
        out = []
        for im in images:
            h, w = im.shape[:2]
            dense = scene(SIZES.index((h, w)), h, w)
            masks = Masks.from_dense(dense)
            out.append(Detections(xyxy=masks.boxes(), scores=[0.9, 0.8, 0.7, 0.6], class_ids=[0, 1, 0, 1],
                                  class_names=tuple(classes), image_size=(h, w), masks=masks))
        return out


def reference(out: Path) -> dict[str, np.ndarray]:
    """{image file name: (4, h, w) masks} as the stand-in detector gave them."""
    names = {}
    for k, (h, w) in enumerate(SIZES):
        names[f"im{k}.png"] = scene(k, h, w)
    return names


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{k}.png")
    return folder


def run_label(photos: Path, out: Path, formats: str, **options) -> dict:
    return label(photos, {"car": ["car"], "person": ["person"]}, out, formats=formats, detector=MaskingDetector(),
                 split="train=0.5,val=0.5", progress=False, **options)


@pytest.fixture(scope="module")
def export(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("label") / "dataset"
    report = run_label(photos, out, "coco,yolo,voc,labelstudio")
    return out, report


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# -- COCO ----------------------------------------------------------------------------------------------
def test_coco_rle_read_back_by_pycocotools(export):
    from pycocotools.coco import COCO

    out, report = export
    expected = reference(out)
    seen = 0
    for split in ("train", "val"):
        coco = COCO(str(out / "coco" / f"{split}.json"))
        for img in coco.loadImgs(coco.getImgIds()):
            anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img["id"])), key=lambda a: a["id"])
            want = expected[img["file_name"]]
            assert len(anns) == len(want) == 4
            for ann, mask in zip(anns, want):
                assert isinstance(ann["segmentation"]["counts"], str)
                got = coco.annToMask(ann).astype(bool)
                assert (got == mask).all()  # exact: RLE is lossless
                assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
                seen += 1
    assert seen == report["boxes"] == 4 * len(SIZES)


def test_coco_polygons_read_back_by_pycocotools(photos, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "out"
    run_label(photos, out, "coco", mask_format="polygon")
    expected = reference(out)
    coco = COCO(str(out / "coco" / "train.json"))
    for img in coco.loadImgs(coco.getImgIds()):
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img["id"])), key=lambda a: a["id"])
        for k, (ann, mask) in enumerate(zip(anns, expected[img["file_name"]])):
            got = coco.annToMask(ann).astype(bool)
            assert ann["area"] == pytest.approx(got.sum())
            if k == 3:  # one pixel: no polygon, the RLE is kept
                assert isinstance(ann["segmentation"], dict) and (got == mask).all()
                continue
            assert isinstance(ann["segmentation"], list)
            assert len(ann["segmentation"]) == (2 if k == 1 else 1)  # the two-part object: two polygons
            # polygons through the boundary pixels' centres lose part of the border pixels
            assert iou(got, mask) > 0.6 and (got & ~mask).sum() <= 0.1 * mask.sum()


def test_exports_without_masks_have_no_segmentation(photos, tmp_path):
    class BoxesOnly(MaskingDetector):
        def detect_batch(self, *a, **k):
            return [d.replace(masks=None) for d in super().detect_batch(*a, **k)]

    out = tmp_path / "out"
    label(photos, {"car": ["car"], "person": ["person"]}, out, formats="coco", detector=BoxesOnly(), progress=False)
    anns = json.loads((out / "coco" / "train.json").read_text())["annotations"]
    assert anns and all(a["segmentation"] == [] and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], abs=0.05)
                        for a in anns)


def test_supervision_reads_coco_masks(export, photos):
    import supervision as sv

    out, _ = export
    expected = reference(out)
    ds = sv.DetectionDataset.from_coco(str(photos), str(out / "coco" / "train.json"), force_masks=True)
    assert len(ds) == 3
    for path, _, dets in ds:
        assert (dets.mask == expected[Path(path).name]).all()


# -- YOLO segmentation ---------------------------------------------------------------------------------
def fill(points: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    out = np.zeros((h, w), np.uint8)
    cv2.fillPoly(out, [np.round(points).astype(np.int32)], 1)
    return out.astype(bool)


# ultralytics' Ray Tune callback warns when Ray is installed but no Tune session runs
@pytest.mark.filterwarnings("ignore:`get_trial_id`:UserWarning")
def test_yolo_segments_checked_read_and_trained_by_ultralytics(export, tmp_path):
    from ovdet.backends.yolo import ultralytics_offline

    out, _ = export
    expected = reference(out)
    ultralytics_offline()
    from ultralytics import YOLO
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(str(out / "yolo" / "data.yaml"))
    assert list(info["names"].values()) == list(CLASSES)
    seen = 0
    for split in ("train", "val"):
        ds = YOLODataset(img_path=info[split], data=info, task="segment", imgsz=64, augment=False)
        for lab in ds.labels:
            name = Path(lab["im_file"]).name
            h, w = lab["shape"]
            want = expected[name]
            assert lab["cls"].reshape(-1).tolist() == [0, 1, 0, 1] and len(lab["segments"]) == 4
            for k, (segment, mask) in enumerate(zip(lab["segments"], want)):
                got = fill(segment * (w, h), h, w)
                if k == 3:  # a single pixel: its box's corners
                    assert got[mask].all() and got.sum() <= 4
                else:  # the two parts of object 1 are one ring, both filled
                    assert iou(got, mask) > 0.85
                seen += 1
    assert seen == 4 * len(SIZES)

    model = YOLO("yolov8n-seg.yaml")  # randomly initialised, nothing downloaded
    model.train(data=str(out / "yolo" / "data.yaml"), epochs=1, imgsz=64, batch=4, device="cpu", workers=0,
                plots=False, amp=False, pretrained=False, project=str(tmp_path), name="run", exist_ok=True,
                verbose=False, val=True)
    assert model.task == "segment"
    rows = (tmp_path / "run" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and "train/seg_loss" in rows[0] and "metrics/mAP50(M)" in rows[0]
    assert (tmp_path / "run" / "weights" / "last.pt").is_file()


# -- Pascal VOC -------------------------------------------------------------------------------------------
def test_voc_segmentation_pngs_and_supervision(export):
    import supervision as sv

    out, report = export
    expected = reference(out)
    voc = out / "voc"
    for split in ("train", "val"):
        stems = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert stems == (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        assert len(stems) == report["splits"][split]
    for name, masks in expected.items():
        stem = Path(name).stem
        objects = Image.open(voc / "SegmentationObject" / f"{stem}.png")
        classes = Image.open(voc / "SegmentationClass" / f"{stem}.png")
        assert objects.mode == classes.mode == "P"
        palette = objects.getpalette()
        assert palette[3:6] == [128, 0, 0] and palette[6:9] == [0, 128, 0] and palette[45:48] == [192, 128, 128]
        want_objects = np.zeros(masks.shape[1:], np.uint8)
        want_classes = np.zeros(masks.shape[1:], np.uint8)
        for i in range(len(masks) - 1, -1, -1):  # the best-scored on top
            want_objects[masks[i]] = i + 1
            want_classes[masks[i]] = [1, 2, 1, 2][i]
        assert (np.array(objects) == want_objects).all() and (np.array(classes) == want_classes).all()

    ds = sv.DetectionDataset.from_pascal_voc(str(voc / "JPEGImages"), str(voc / "Annotations"))
    assert len(ds) == len(SIZES) and sorted(ds.classes) == ["car", "person"]
    for path, _, dets in ds:
        want = expected[Path(path).name]
        assert dets.mask is not None and len(dets) == 4
        for k in range(3):
            assert iou(dets.mask[k], want[k]) > 0.85
        assert not dets.mask[3].any()  # one pixel: no polygon, the box alone


# -- Label Studio ---------------------------------------------------------------------------------------------
def _tasks(out: Path) -> dict[str, dict]:
    return {Path(t["data"]["ovdet_path"]).name: t for t in json.loads((out / "labelstudio" / "tasks.json").read_text())}


def test_labelstudio_brush_decoded_by_label_studio_converter(export):
    import xml.etree.ElementTree as ET

    from label_studio_converter.brush import decode_rle

    out, _ = export
    expected = reference(out)
    config = ET.fromstring((out / "labelstudio" / "config.xml").read_text())
    brush = config.find("BrushLabels")
    assert brush.get("name") == "label" and brush.get("toName") == config.find("Image").get("name") == "image"
    assert [l.get("value") for l in brush.findall("Label")] == list(CLASSES)
    tasks = _tasks(out)
    assert len(tasks) == len(SIZES)
    for name, masks in expected.items():
        h, w = masks.shape[1:]
        results = tasks[name]["predictions"][0]["result"]
        assert [r["value"]["brushlabels"] for r in results] == [["car"], ["person"], ["car"], ["person"]]
        for r, mask in zip(results, masks):
            assert r["type"] == "brushlabels" and r["value"]["format"] == "rle"
            assert (r["original_width"], r["original_height"]) == (w, h) and 0 < r["score"] <= 1
            rgba = decode_rle(r["value"]["rle"]).reshape(h, w, 4)
            assert (rgba == (mask * 255).astype(np.uint8)[..., None]).all()  # exact, every channel


def test_labelstudio_polygons(photos, tmp_path):
    import xml.etree.ElementTree as ET

    out = tmp_path / "out"
    run_label(photos, out, "labelstudio", mask_format="polygon")
    assert ET.fromstring((out / "labelstudio" / "config.xml").read_text()).find("PolygonLabels") is not None
    tasks = _tasks(out)
    for name, masks in reference(out).items():
        h, w = masks.shape[1:]
        for k, (r, mask) in enumerate(zip(tasks[name]["predictions"][0]["result"], masks)):
            value = r["value"]
            assert r["type"] == "polygonlabels" and value["closed"] is True and len(value["polygonlabels"]) == 1
            points = np.asarray(value["points"]) / 100 * (w, h)
            assert ((0 <= points) & (points <= (w, h))).all()
            got = fill(points, h, w)
            assert (got[mask].all() and got.sum() <= 4) if k == 3 else iou(got, mask) > 0.85


# -- memory --------------------------------------------------------------------------------------------------
def test_huge_image_masks_export_from_crops(tmp_path):
    """A 20000 x 20000 image: COCO, YOLO and Label Studio write its masks from the crops (a
    dense mask would be 400 MB each)."""
    import tracemalloc

    from ovdet.label.dataset import LabelledImage
    from ovdet.label.exporters import export

    h = w = 20000
    crops = [np.ones((300, 200), bool), np.zeros((50, 60), bool), np.ones((20, w), bool)]
    crops[1][10:40, 5:50] = True
    masks = Masks.from_crops(crops, [(100, 19900), (15000, 300), (h - 20, 0)], (h, w))  # the first overhangs
    dets = Detections(xyxy=masks.boxes(), scores=[0.9, 0.8, 0.7], class_ids=[0, 1, 0], class_names=CLASSES,
                      image_size=(h, w), masks=masks)
    source = tmp_path / "huge.jpg"
    source.write_bytes(b"")  # linked, never read
    images = [LabelledImage(path=str(source), name="huge.jpg", detections=dets)]
    import supervision.dataset.formats.coco  # noqa: F401  (imports are not what is measured)
    import yaml  # noqa: F401

    tracemalloc.start()
    export(images, CLASSES, tmp_path / "out", ("coco", "yolo", "labelstudio"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 30e6, f"{peak / 1e6:.0f} MB"
    from pycocotools import mask as mask_utils

    anns = json.loads((tmp_path / "out" / "coco" / "train.json").read_text())["annotations"]
    assert [a["area"] for a in anns] == [100 * 300, 30 * 45, 20 * w]
    assert [int(mask_utils.area(a["segmentation"])) for a in anns] == [100 * 300, 30 * 45, 20 * w]
    lines = (tmp_path / "out" / "yolo" / "labels" / "train" / "huge.txt").read_text().splitlines()
    assert len(lines) == 3 and lines[2].startswith("0 ")
