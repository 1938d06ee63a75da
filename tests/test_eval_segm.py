"""`ovdet eval --iou-type segm`: mask AP equal to pycocotools' COCOeval(..., "segm") and to
lvis-api's LVISEval(iou_type="segm") run directly on the same files (generated ground truth with
polygons, RLE and crowd regions; generated mask results; real COCO val masks, perturbed), results
files that carry "segmentation" RLE, and the one-line errors when masks are missing."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ovdet.cli.app import main
from ovdet.config import DetectorConfig
from ovdet.eval import evaluate
from ovdet.eval.coco import COCO_KEYS
from ovdet.eval.dataset import AnnotationError, ResultsError, load_dataset, load_results
from ovdet.eval.lvis import LVIS_KEYS, lvis_api
from ovdet.eval.runner import MasksRequiredError, partial_path, run_detector
from ovdet.instance_masks import Masks
from ovdet.structures import Detections

SIZES = [(60, 80), (72, 50), (64, 64), (50, 90)]  # (h, w)


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": out["size"], "counts": out["counts"].decode("ascii")}


def blob(rng, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(3, h / 3), rng.uniform(3, w / 3)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def polygon_of(mask: np.ndarray) -> list[list[float]]:
    polys = Masks.from_dense([mask]).to_polygons(0)
    return [p for p in polys if len(p) >= 6]


def perturb(rng, mask: np.ndarray) -> np.ndarray:
    """A plausible prediction of `mask`: shifted by a few pixels, grown or shrunk."""
    import cv2

    dy, dx = (int(v) for v in rng.integers(-3, 4, 2))
    out = np.roll(mask, (dy, dx), axis=(0, 1))
    kernel = np.ones((3, 3), np.uint8)
    op = rng.integers(0, 3)
    if op == 1:
        out = cv2.dilate(out.astype(np.uint8), kernel).astype(bool)
    elif op == 2:
        out = cv2.erode(out.astype(np.uint8), kernel).astype(bool)
    return out


def box_of(mask: np.ndarray) -> list[float]:
    return [float(v) for v in mask_utils.toBbox(rle(mask))]


def synthetic(tmp: Path, lvis: bool = False, seed: int = 0) -> tuple[Path, Path]:
    """Ground truth (polygons, RLE and crowd RLE; LVIS-style with `lvis`) and mask results with
    true positives, misses, false positives and one detection on a crowd region."""
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": n} for c, n in ((1, "cat"), (3, "dog"), (7, "bird"))]
    if lvis:
        for cat, freq in zip(cats, "rcf"):
            cat["frequency"] = freq
    images, anns, results = [], [], []
    for i, (h, w) in enumerate(SIZES, start=1):
        img = {"id": i, "file_name": f"im{i}.png", "height": h, "width": w}
        if lvis:
            img.update(neg_category_ids=[7] if i % 2 else [], not_exhaustive_category_ids=[3] if i == 2 else [])
        images.append(img)
        for k in range(int(rng.integers(2, 6))):
            mask = blob(rng, h, w)
            cat = int(rng.choice([1, 3] if lvis and i % 2 else [1, 3, 7]))
            crowd = not lvis and k == 0 and i == 3
            poly = polygon_of(mask)
            if crowd or not poly or k % 2:
                segm = rle(mask)
            else:
                segm, mask = poly, mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, h, w))).astype(bool)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": segm,
                         "area": float(mask.sum()), "bbox": box_of(mask), "iscrowd": int(crowd)})
            if rng.random() < 0.8:  # found, with a perturbed mask
                pred = perturb(rng, mask)
                results.append({"image_id": i, "category_id": cat, "segmentation": rle(pred), "bbox": box_of(pred),
                                "score": round(float(rng.uniform(0.2, 1.0)), 4)})
        for _ in range(int(rng.integers(1, 4))):  # false positives
            pred = blob(rng, h, w)
            results.append({"image_id": i, "category_id": int(rng.choice([1, 3, 7])), "segmentation": rle(pred),
                            "bbox": box_of(pred), "score": round(float(rng.uniform(0.0, 0.6)), 4)})
    gt = {"images": images, "annotations": anns, "categories": cats}
    gt_path, res_path = tmp / ("lvis.json" if lvis else "coco.json"), tmp / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path


def without_bbox(res_path: Path) -> list[dict]:
    """The results as mask AP is computed from them (areas from the masks)."""
    return [{k: v for k, v in det.items() if k != "bbox"} for det in json.loads(res_path.read_text())]


def pycocotools_segm(gt_path: Path, res_path: Path, image_ids=None) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(without_bbox(res_path)), "segm")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def lvis_segm(gt_path: Path, res_path: Path) -> dict:
    lvis = lvis_api()
    gt = lvis.LVIS(str(gt_path))
    ev = lvis.LVISEval(gt, lvis.LVISResults(gt, without_bbox(res_path)), iou_type="segm")
    ev.run()
    return ev.results


# -- equality with the reference evaluators ------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_coco_mask_ap_equals_pycocotools(tmp_path, seed):
    gt_path, res_path = synthetic(tmp_path, seed=seed)
    dataset = load_dataset(gt_path)
    ours = evaluate("coco", dataset, load_results(res_path, dataset, "segm"), iou_type="segm").metrics
    want = pycocotools_segm(gt_path, res_path)
    assert [ours[k] for k in COCO_KEYS] == want.tolist()
    assert ours["iou_type"] == "segm" and "segm" in ours["evaluator"]
    assert 0 < ours["AP"] < 1
    # the same results scored as boxes give other numbers: the iou type is what is scored
    boxes = evaluate("coco", dataset, load_results(res_path, dataset), iou_type="bbox").metrics
    assert [boxes[k] for k in COCO_KEYS] != [ours[k] for k in COCO_KEYS]


def test_lvis_mask_ap_equals_lvis_api(tmp_path):
    gt_path, res_path = synthetic(tmp_path, lvis=True)
    dataset = load_dataset(gt_path)
    assert dataset.kind == "lvis"
    ours = evaluate("lvis", dataset, load_results(res_path, dataset, "segm"), iou_type="segm").metrics
    want = lvis_segm(gt_path, res_path)
    assert [ours[k] for k in LVIS_KEYS] == [float(want[k]) for k in LVIS_KEYS]
    assert ours["AR"] == float(want["AR@300"]) and ours["iou_type"] == "segm"


def test_real_coco_and_lvis_masks(shared_data, tmp_path):
    """Real COCO val masks (polygons and crowd RLE) of a few images, perturbed, as predictions."""
    from pycocotools.coco import COCO

    folder = shared_data / "coco-mini-val"
    rng = np.random.default_rng(3)
    for name in ("instances_val2017.json", "lvis_style_val2017.json"):
        data = json.loads((folder / name).read_text())
        keep = {img["id"] for img in data["images"][:6]}
        data["images"] = [img for img in data["images"] if img["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        gt_path = tmp_path / name
        gt_path.write_text(json.dumps(data))
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(gt_path))
        results = []
        for ann in data["annotations"]:
            if ann.get("iscrowd") or rng.random() < 0.15:
                continue
            pred = perturb(rng, coco.annToMask(ann).astype(bool))
            results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "segmentation": rle(pred),
                            "bbox": box_of(pred), "score": round(float(rng.uniform(0.1, 1)), 4)})
        res_path = tmp_path / f"results-{name}"
        res_path.write_text(json.dumps(results))
        dataset = load_dataset(gt_path)
        got = evaluate(dataset.kind, dataset, load_results(res_path, dataset, "segm"), iou_type="segm").metrics
        if dataset.kind == "lvis":
            want = lvis_segm(gt_path, res_path)
            assert [got[k] for k in LVIS_KEYS] == [float(want[k]) for k in LVIS_KEYS]
        else:
            assert [got[k] for k in COCO_KEYS] == pycocotools_segm(gt_path, res_path).tolist()
        assert 0.2 < got["AP"] < 1


# -- running a detector ----------------------------------------------------------------------------------
class MaskingDetector:
    """Stands in for a detector with a masker: per image, each class's blob and its mask."""

    def __init__(self, masks: bool = True):
        self.config = DetectorConfig(name="stand-in", masks="stand-in-sam" if masks else "")
        self.with_masks = masks
        self.calls = 0

    def detect_batch(self, images, classes, threshold=None, batch_size=None, **_):
        self.calls += 1
        out = []
        for image in images:
            h, w = image.shape[:2]
            rng = np.random.default_rng(h * 1000 + w)
            dense = np.stack([blob(rng, h, w) for _ in classes])
            masks = Masks.from_dense(dense)
            out.append(Detections(xyxy=masks.boxes(), scores=np.linspace(0.9, 0.3, len(classes)),
                                  class_ids=np.arange(len(classes)), class_names=tuple(map(str, classes)),
                                  image_size=(h, w), masks=masks if self.with_masks else None))
        return out


@pytest.fixture
def synthetic_images(tmp_path) -> tuple[Path, Path]:
    gt_path, res_path = synthetic(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate(SIZES, start=1):
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(images / f"im{i}.png")
    return gt_path, images


def test_run_detector_writes_segmentation_and_scores_it(synthetic_images, tmp_path):
    gt_path, images = synthetic_images
    dataset = load_dataset(gt_path)
    out = tmp_path / "run" / "results.json"
    outcome = run_detector(MaskingDetector(), dataset, images, classes=["cat", "dog", "bird"], category_ids=[1, 3, 7],
                           results_out=out, progress=False, need_masks=True)
    saved = json.loads(out.read_text())
    assert saved == outcome.results and len(saved) == 3 * len(SIZES)
    by_size = {img["id"]: (img["height"], img["width"]) for img in dataset.images}
    for det in saved:
        assert det["segmentation"]["size"] == list(by_size[det["image_id"]])
        # the box and the mask are the same detection's
        assert box_of(mask_utils.decode({**det["segmentation"], "counts": det["segmentation"]["counts"].encode()})
                      ) == pytest.approx(det["bbox"], abs=0.01)
    ours = evaluate("coco", dataset, load_results(out, dataset, "segm"), iou_type="segm").metrics
    assert [ours[k] for k in COCO_KEYS] == pycocotools_segm(gt_path, out).tolist()


def test_detector_without_masks_is_refused(synthetic_images, tmp_path):
    gt_path, images = synthetic_images
    out = tmp_path / "run" / "results.json"
    detector = MaskingDetector(masks=False)
    with pytest.raises(MasksRequiredError, match="--masks MODEL"):
        run_detector(detector, load_dataset(gt_path), images, classes=["cat", "dog", "bird"], category_ids=[1, 3, 7],
                     results_out=out, progress=False, need_masks=True)
    assert detector.calls == 1 and not partial_path(out).exists() and not out.exists()


# -- the command ---------------------------------------------------------------------------------------------
def test_cli_results_segm_equals_pycocotools(tmp_path, capsys):
    gt_path, res_path = synthetic(tmp_path)
    metrics = tmp_path / "metrics.json"
    assert main(["eval", "--results", str(res_path), "--annotations", str(gt_path), "--iou-type", "segm",
                 "--metrics-out", str(metrics)]) == 0
    got = json.loads(metrics.read_text())
    assert [got[k] for k in COCO_KEYS] == pycocotools_segm(gt_path, res_path).tolist()
    assert got["iou_type"] == "segm"


@pytest.mark.parametrize("what, message", [
    ("no-segmentation", "has no 'segmentation'"),
    ("polygon", "must be COCO compressed RLE"),
    ("wrong-size", "a mask of size"),
])
def test_cli_bad_mask_results_one_line(tmp_path, capsys, what, message):
    gt_path, res_path = synthetic(tmp_path)
    results = json.loads(res_path.read_text())
    if what == "no-segmentation":
        del results[2]["segmentation"]
    elif what == "polygon":
        results[2]["segmentation"] = [[1, 1, 5, 1, 5, 5]]
    else:
        results[2]["segmentation"] = rle(np.zeros((5, 5), bool))
    res_path.write_text(json.dumps(results))
    assert main(["eval", "--results", str(res_path), "--annotations", str(gt_path), "--iou-type", "segm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "entry #3" in err[0]
    with pytest.raises(ResultsError, match=message.replace("'", ".")):
        load_results(res_path, load_dataset(gt_path), "segm")


def test_cli_model_without_masker_is_one_line(synthetic_images, tmp_path, capsys):
    gt_path, images = synthetic_images
    rc = main(["eval", "--images", str(images), "--annotations", str(gt_path), "--iou-type", "segm",
               "--model", "owlv2-b16", "--project", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--masks MODEL" in err[0] and "owlv2-b16" in err[0]
    assert not (tmp_path / "runs").exists()


def test_annotations_without_masks_are_refused(tmp_path, capsys):
    gt_path, res_path = synthetic(tmp_path)
    data = json.loads(gt_path.read_text())
    data["annotations"][1].pop("segmentation")
    gt_path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match="annotation #2 has no 'segmentation'"):
        from ovdet.eval.dataset import check_segmentations

        check_segmentations(load_dataset(gt_path))
    assert main(["eval", "--results", str(res_path), "--annotations", str(gt_path), "--iou-type", "segm"]) == 2
    # box AP needs no masks
    assert main(["eval", "--results", str(res_path), "--annotations", str(gt_path),
                 "--metrics-out", str(tmp_path / "m.json")]) == 0
