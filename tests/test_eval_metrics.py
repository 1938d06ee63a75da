"""Evaluation protocols on the real COCO mini-val annotations, checked against pycocotools and
lvis-api run directly on the same files (no model involved)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ovdet.errors import OvdetError
from ovdet.eval import evaluate
from ovdet.eval.coco import COCO_KEYS
from ovdet.eval.dataset import AnnotationError, ResultsError, check_results, load_dataset, load_results
from ovdet.eval.lvis import LVIS_KEYS, evaluate_lvis
from ovdet.eval.ovcoco import load_split

# the reference lvis-api runs below log through the deprecated Logger.warn
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def coco_path(shared_data) -> Path:
    return shared_data / "coco-mini-val" / "instances_val2017.json"


@pytest.fixture(scope="module")
def lvis_path(shared_data) -> Path:
    return shared_data / "coco-mini-val" / "lvis_style_val2017.json"


@pytest.fixture(scope="module")
def coco(coco_path):
    return load_dataset(coco_path)


@pytest.fixture(scope="module")
def lvis_ds(lvis_path):
    return load_dataset(lvis_path)


def gt_as_results(dataset) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
        for a in dataset.data["annotations"]
    ]


def perturbed(dataset, seed: int, crowded_image: bool = False) -> list[dict]:
    """Ground truth made imperfect: 15% dropped, boxes jittered, duplicates, false positives
    (some in categories annotated as absent), scores shuffled; optionally one image with 400
    extra boxes so per-image caps (LVIS: 300) take effect."""
    rng = np.random.default_rng(seed)
    images = {img["id"]: img for img in dataset.images}
    cat_ids = dataset.category_ids
    out = []
    for ann in dataset.data["annotations"]:
        x, y, w, h = ann["bbox"]
        if rng.random() < 0.15:
            continue
        for _ in range(1 + (rng.random() < 0.1)):  # sometimes a duplicate
            j = rng.normal(0.0, 0.08, 4)
            box = [x + j[0] * w, y + j[1] * h, max(w * (1 + j[2]), 0.5), max(h * (1 + j[3]), 0.5)]
            out.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": box, "score": 0.0})
    for image_id, img in images.items():
        negatives = img.get("neg_category_ids", [])
        n_fp = 400 if crowded_image and image_id == dataset.images[0]["id"] else int(rng.integers(0, 6))
        for _ in range(n_fp):
            w, h = rng.uniform(5, img["width"] / 2), rng.uniform(5, img["height"] / 2)
            box = [rng.uniform(0, img["width"] - w), rng.uniform(0, img["height"] - h), w, h]
            pool = negatives if negatives and rng.random() < 0.5 else cat_ids
            out.append({"image_id": image_id, "category_id": int(rng.choice(pool)), "bbox": box, "score": 0.0})
    scores = rng.random(len(out))
    rng.shuffle(scores)
    for det, score in zip(out, scores):
        det["score"] = float(score)
        det["bbox"] = [float(v) for v in det["bbox"]]
    return out


def write(tmp_path: Path, name: str, payload) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return path


def direct_cocoeval(ann_path: Path, res_path: Path, cat_ids=None, img_ids=None):
    """pycocotools exactly as its README uses it, from the files."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(ann_path))
    dt = gt.loadRes(str(res_path))
    ev = COCOeval(gt, dt, "bbox")
    if cat_ids is not None:
        ev.params.catIds = list(cat_ids)
    if img_ids is not None:
        ev.params.imgIds = list(img_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(s) for s in ev.stats]


@pytest.fixture
def direct_lvis(monkeypatch):
    """lvis-api as published, independent of ovdet's compatibility view: numpy gets `np.float`
    back for the duration of the test, and lvis.eval sees the real numpy module."""
    import lvis
    import lvis.eval

    monkeypatch.setattr(np, "float", float, raising=False)
    monkeypatch.setattr(lvis.eval, "np", np)

    def run(ann_path: Path, results, max_dets: int = 300, img_ids=None):
        gt = lvis.LVIS(str(ann_path))
        results = results if isinstance(results, str) else [dict(r) for r in results]
        dt = lvis.LVISResults(gt, results, max_dets=max_dets)
        ev = lvis.LVISEval(gt, dt, iou_type="bbox")
        ev.params.max_dets = max_dets
        if img_ids is not None:
            ev.params.img_ids = list(img_ids)
        ev.run()
        return dict(ev.results)

    return run


# -- ground truth fed back ----------------------------------------------------------------------
def test_coco_ground_truth_scores_one(coco):
    m = evaluate("coco", coco, gt_as_results(coco)).metrics
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "ARs", "ARm", "ARl"):
        assert m[key] == 1.0, key
    assert m["num_images"] == 79 and m["protocol"] == "coco"
    scored = [row for row in m["per_category"].values() if row["AP"] >= 0]
    assert len(scored) == 78  # 78 of the 80 classes occur in these images
    # pycocotools divides by tp + fp + eps, so a perfect category scores 1 - 2e-16
    assert all(row["AP"] == pytest.approx(1.0, abs=1e-12) for row in scored)


def test_lvis_ground_truth_scores_one(lvis_ds):
    for mode in ("standard", "fixed"):
        m = evaluate("lvis", lvis_ds, gt_as_results(lvis_ds), lvis_mode=mode).metrics
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APf", "AR"):
            assert m[key] == 1.0, (mode, key)
        assert m["APr"] == -1.0 and m["APc"] == -1.0  # only 'frequent' classes occur in these images
        assert m["lvis_mode"] == mode


def test_ov_coco_ground_truth_scores_one(coco):
    m = evaluate("ov-coco", coco, gt_as_results(coco)).metrics
    assert m["AP50_novel"] == m["AP50_base"] == m["AP50_all"] == 1.0


def test_empty_results_score_zero(coco, lvis_ds):
    assert evaluate("coco", coco, []).metrics["AP"] == 0.0
    assert evaluate("lvis", lvis_ds, []).metrics["AP"] == 0.0


# -- exact agreement with the reference implementations ---------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_coco_equals_pycocotools(coco, coco_path, tmp_path, seed):
    results = perturbed(coco, seed)
    res_path = write(tmp_path, "results.json", results)
    m = evaluate("coco", coco, load_results(res_path, coco)).metrics
    reference = direct_cocoeval(coco_path, res_path)
    assert [m[k] for k in COCO_KEYS] == reference
    assert 0.2 < m["AP"] < 0.9  # a real, non-trivial score
    # per-category AP = pycocotools on that category alone
    for name in ("person", "car", "book", "bowl"):
        row = m["per_category"][name]
        assert row["AP"] == direct_cocoeval(coco_path, res_path, cat_ids=[row["id"]])[0]


def test_coco_subset_of_images_equals_pycocotools(coco, coco_path, tmp_path):
    results = perturbed(coco, 2)
    res_path = write(tmp_path, "results.json", results)
    ids = coco.image_ids[:30]
    m = evaluate("coco", coco, results, image_ids=ids).metrics
    assert [m[k] for k in COCO_KEYS] == direct_cocoeval(coco_path, res_path, img_ids=sorted(ids))
    assert m["num_images"] == 30


def test_ov_coco_equals_pycocotools_on_novel_and_base(coco, coco_path, tmp_path):
    split = load_split()
    results = perturbed(coco, 3)
    res_path = write(tmp_path, "results.json", results)
    m = evaluate("ov-coco", coco, results).metrics
    assert m["AP50_novel"] == direct_cocoeval(coco_path, res_path, cat_ids=sorted(split.novel))[1]
    assert m["AP50_base"] == direct_cocoeval(coco_path, res_path, cat_ids=sorted(split.base))[1]
    assert m["AP50_all"] == direct_cocoeval(coco_path, res_path, cat_ids=split.ids)[1]
    assert m["AP50_novel"] != m["AP50_base"]
    assert m["num_categories"] == 65
    assert {row["split"] for row in m["per_category"].values()} == {"novel", "base"}


def test_ov_coco_split_matches_published_facts(shared_data):
    split = load_split()
    facts = json.loads((shared_data / "metadata" / "ov_coco_split.json").read_text())
    assert len(split.base) == 48 and len(split.novel) == 17 and len(split.excluded) == 15
    assert split.base == {c["id"]: c["name"] for c in facts["base"]}
    assert split.novel == {c["id"]: c["name"] for c in facts["novel"]}
    assert split.excluded == {c["id"]: c["name"] for c in facts["excluded_from_ovcoco"]}


def test_lvis_standard_equals_lvis_api(lvis_ds, lvis_path, tmp_path, direct_lvis):
    results = perturbed(lvis_ds, 4, crowded_image=True)
    res_path = write(tmp_path, "results.json", results)
    m = evaluate_lvis(lvis_ds, load_results(res_path, lvis_ds), mode="standard").metrics
    reference = direct_lvis(lvis_path, str(res_path))
    assert [m[k] for k in LVIS_KEYS] == [float(reference[k]) for k in LVIS_KEYS]
    recall_keys = ("AR", "ARs", "ARm", "ARl")
    assert [m[k] for k in recall_keys] == [float(reference[k + "@300"]) for k in recall_keys]
    assert 0.2 < m["AP"] < 0.9


def reference_fixed(results: list[dict], k: int) -> list[dict]:
    """Fixed AP's selection as Dave et al. describe it: per category, the k top-scored."""
    cats: dict[int, list[dict]] = {}
    for r in results:
        cats.setdefault(r["category_id"], []).append(r)
    return [r for dets in cats.values() for r in sorted(dets, key=lambda d: -d["score"])[:k]]


@pytest.mark.parametrize("per_class", [10_000, 3])
def test_lvis_fixed_equals_lvis_api(lvis_ds, lvis_path, direct_lvis, per_class):
    results = perturbed(lvis_ds, 5, crowded_image=True)
    m = evaluate_lvis(lvis_ds, results, mode="fixed", max_dets_per_class=per_class).metrics
    reference = direct_lvis(lvis_path, reference_fixed(results, per_class), max_dets=-1)
    assert [m[k] for k in LVIS_KEYS] == [float(reference[k]) for k in LVIS_KEYS]
    assert m["AR"] == float(reference["AR@-1"])
    assert m["max_dets_per_image"] is None and m["max_dets_per_class"] == per_class
    if per_class == 3:
        assert m["num_categories_capped"] > 0
    standard = evaluate_lvis(lvis_ds, results, mode="standard").metrics
    assert standard["AP"] != m["AP"]  # the crowded image's 400 boxes: capped at 300 only in standard


def test_lvis_fix_leaves_numpy_alone(lvis_ds):
    evaluate_lvis(lvis_ds, gt_as_results(lvis_ds)[:50])
    if np.lib.NumpyVersion(np.__version__) >= "1.24.0":
        assert not hasattr(np, "float")  # the aliases live only in lvis-api's own view of numpy


# -- bad input: one clear line ------------------------------------------------------------------
def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and isinstance(exc.value, OvdetError)
    return text


@pytest.mark.parametrize(
    "content, expected",
    [
        ("not json {", "is not valid JSON"),
        ("[1, 2]", "a results file?"),
        ('{"images": []}', "no 'annotations' list"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "lists no categories"),
        ('{"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}], '
         '"annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1}]}', "image id 2"),
        ('{"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}], '
         '"annotations": [{"id": 0, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1}]}',
         "positive integer 'id'"),
        ('{"images": [{"id": 1}], "categories": ["cat"], "annotations": []}', "category #1 has no integer 'id'"),
        ('{"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}], '
         '"annotations": [{"id": 1, "image_id": [1], "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1}]}',
         "image id [1]"),
    ],
)
def test_bad_annotations(tmp_path, content, expected):
    path = tmp_path / "ann.json"
    path.write_text(content)
    with pytest.raises(AnnotationError) as exc:
        load_dataset(path)
    assert expected in one_line(exc)


def test_bad_results(coco, tmp_path):
    good = gt_as_results(coco)[:5]
    with pytest.raises(ResultsError) as exc:
        check_results([*good, dict(good[0], image_id=123)], coco, "r.json")
    assert "image ids not in instances_val2017.json (e.g. 123)" in one_line(exc)
    with pytest.raises(ResultsError) as exc:
        check_results([dict(good[0], category_id=0)], coco, "r.json")
    assert "class indices" in one_line(exc)
    with pytest.raises(ResultsError) as exc:
        check_results([dict(good[0], bbox=[10, 10, 5, -2])], coco, "r.json")
    assert "[x, y, w, h]" in one_line(exc)
    with pytest.raises(ResultsError) as exc:
        check_results([dict(good[0], score=float("nan"))], coco, "r.json")
    assert "finite" in one_line(exc)
    with pytest.raises(ResultsError) as exc:
        check_results([dict(good[0], image_id=[good[0]["image_id"]])], coco, "r.json")
    assert "'image_id' must be an integer id" in one_line(exc)
    with pytest.raises(ResultsError) as exc:
        load_results(coco.path, coco)
    assert "annotation file, not results" in one_line(exc)


def test_protocol_needs_matching_annotations(coco, lvis_ds):
    with pytest.raises(AnnotationError) as exc:
        evaluate("lvis", coco, [])
    assert "not LVIS-style" in one_line(exc)
    with pytest.raises(AnnotationError) as exc:
        evaluate("ov-coco", lvis_ds, [])
    assert "OV-COCO" in one_line(exc)
