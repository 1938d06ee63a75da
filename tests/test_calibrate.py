"""`ovdet calibrate`: COCO matching, fitting from results files and images, the calibration
file, and its use by the detector commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ovdet.calibration import CalibrationError, load_calibration, weights_fingerprint
from ovdet.calibrators import Isotonic, Platt
from ovdet.calibrate.matching import match_results
from ovdet.calibrate.pipeline import CalibrationDataError, calibrate_results
from ovdet.calibrate.thresholds import Target
from ovdet.cli.app import main
from ovdet.eval.dataset import load_dataset


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Run folders (runs/<task>/exp<N>) go under the test's temporary folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


def coco_mini(shared_data: Path) -> Path:
    return shared_data / "coco-mini-val" / "instances_val2017.json"


def perturbed_results(annotations: Path, seed: int = 0) -> list[dict]:
    """Detections around every ground-truth box (crowd regions included), some with the wrong
    category, plus random boxes; a score that favours close boxes, so a fit has signal."""
    data = json.loads(annotations.read_text())
    cat_ids = [c["id"] for c in data["categories"]]
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    rng = np.random.default_rng(seed)
    out = []
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        for _ in range(int(rng.integers(1, 4))):
            jitter = rng.normal(0, 0.2, 4)
            cat = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids))
            quality = float(np.exp(-np.abs(jitter).sum()))
            out.append({"image_id": ann["image_id"], "category_id": cat,
                        "bbox": [x + jitter[0] * w, y + jitter[1] * h, w * np.exp(jitter[2]), h * np.exp(jitter[3])],
                        "score": float(np.clip(0.7 * quality + 0.3 * rng.random(), 0.001, 0.999))})
    for image_id, (width, height) in sizes.items():
        for _ in range(5):
            bw, bh = rng.uniform(10, width / 2), rng.uniform(10, height / 2)
            out.append({"image_id": image_id, "category_id": int(rng.choice(cat_ids)),
                        "bbox": [rng.uniform(0, width - bw), rng.uniform(0, height - bh), bw, bh],
                        "score": float(rng.uniform(0.001, 0.4))})
    return out


# -- matching ---------------------------------------------------------------------------------
def test_matching_equals_pycocotools_on_coco_mini_val(shared_data):
    """tp / ignored flags equal COCOeval's dtMatches / dtIgnore at IoU 0.5 (area "all", 100
    detections), read from a default COCOeval run: all ten IoUs, four areas, three caps."""
    from pycocotools.cocoeval import COCOeval

    from ovdet.eval.coco import coco_dt, coco_gt, quiet

    dataset = load_dataset(coco_mini(shared_data))
    results = perturbed_results(coco_mini(shared_data))
    matching = match_results(dataset, results, iou=0.5)

    gt = coco_gt(dataset)
    ev = COCOeval(gt, coco_dt(gt, results), "bbox")
    with quiet():
        ev.evaluate()
    assert ev.params.iouThrs[0] == 0.5 and ev.params.maxDets[-1] == 100
    expected_tp = np.zeros(len(results), dtype=bool)
    expected_ignored = np.zeros(len(results), dtype=bool)
    seen = np.zeros(len(results), dtype=bool)
    num_gt: dict[int, int] = {}
    for cell in ev.evalImgs:
        if cell is None or cell["aRng"] != [0, 1e10] or cell["maxDet"] != 100:
            continue
        num_gt[cell["category_id"]] = num_gt.get(cell["category_id"], 0) + int((~cell["gtIgnore"].astype(bool)).sum())
        idx = np.asarray(cell["dtIds"], dtype=np.int64) - 1
        seen[idx] = True
        expected_tp[idx] = cell["dtMatches"][0] > 0
        expected_ignored[idx] = cell["dtIgnore"][0].astype(bool)
    assert seen.all()  # no image/category cell had more than 100 detections: nothing truncated
    expected_tp &= ~expected_ignored
    np.testing.assert_array_equal(matching.tp, expected_tp)
    np.testing.assert_array_equal(matching.ignored, expected_ignored)
    assert 300 < matching.tp.sum() < len(results) and matching.ignored.any()  # crowd regions matched
    assert {k: v for k, v in matching.num_gt.items() if v} == {k: v for k, v in num_gt.items() if v}
    assert sum(matching.num_gt.values()) == 619  # 624 boxes less the 5 crowd regions


def test_matching_rules_on_a_small_case(tmp_path):
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 200}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 90, 90], "area": 8100, "iscrowd": 1},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9},   # TP
        {"image_id": 1, "category_id": 1, "bbox": [12, 10, 50, 50], "score": 0.8},   # duplicate: FP
        {"image_id": 1, "category_id": 1, "bbox": [110, 110, 40, 40], "score": 0.7},  # inside the crowd: ignored
        {"image_id": 1, "category_id": 2, "bbox": [10, 10, 50, 50], "score": 0.6},   # wrong class: FP
        {"image_id": 1, "category_id": 1, "bbox": [40, 10, 50, 50], "score": 0.95},  # IoU 0.25: FP, before the TP
    ]
    m = match_results(load_dataset(path), results, iou=0.5)
    assert m.tp.tolist() == [True, False, False, False, False]
    assert m.ignored.tolist() == [False, False, True, False, False]
    assert m.num_gt == {1: 1, 2: 0}
    # at IoU 0.2 the highest-scored box (IoU 0.25) takes the object first
    m = match_results(load_dataset(path), results, iou=0.2)
    assert m.tp.tolist() == [False, False, False, False, True]


# -- fitting from results ---------------------------------------------------------------------
def test_calibrate_results_per_class_and_shared(shared_data):
    dataset = load_dataset(coco_mini(shared_data))
    run = calibrate_results(dataset, perturbed_results(coco_mini(shared_data)), method="platt",
                            target=Target("precision", 0.8), min_examples=10, folds=3, seed=1)
    cal = run.calibration
    own = {n for n, e in cal.classes.items() if e.source == "class"}
    assert "person" in own and 0 < len(own) < len(cal.classes)
    for name, entry in cal.classes.items():
        if entry.source == "shared":
            assert entry.calibrator is None and entry.threshold == cal.shared_threshold
            assert "too few examples" in entry.stats["reason"]
        else:
            assert entry.stats["true_positives"] >= 10 and entry.stats["false_positives"] >= 10
    report = cal.report
    assert report["after"]["ece"] < report["before"]["ece"]
    assert report["cross_validation"]["folds"] == 3
    assert report["cross_validation"]["after"]["ece"] < report["before"]["ece"]
    # the same seed gives the same folds, another seed others
    again = calibrate_results(dataset, perturbed_results(coco_mini(shared_data)), method="platt",
                              target=Target("precision", 0.8), folds=3, seed=1)
    np.testing.assert_array_equal(again.cv.probs, run.cv.probs)
    other = calibrate_results(dataset, perturbed_results(coco_mini(shared_data)), method="platt",
                              target=Target("precision", 0.8), folds=3, seed=2)
    assert not np.array_equal(other.cv.probs, run.cv.probs)


def test_calibrate_results_refuses_what_it_cannot_fit(shared_data):
    dataset = load_dataset(coco_mini(shared_data))
    with pytest.raises(CalibrationDataError, match="no detections"):
        calibrate_results(dataset, [])
    only_tp = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in dataset.data["annotations"] if not a.get("iscrowd")]
    with pytest.raises(CalibrationDataError, match="false positive"):
        calibrate_results(dataset, only_tp)


# -- the command line -------------------------------------------------------------------------
def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def results_file(shared_data, tmp_path) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(perturbed_results(coco_mini(shared_data))))
    return path


def test_cli_fits_from_results_and_writes_report_and_plots(shared_data, results_file, tmp_path, capsys, tiny_owlv2):
    out = tmp_path / "cal.yaml"
    code = main(["calibrate", "--results", str(results_file), "--annotations", str(coco_mini(shared_data)),
                 "--classes", "person,car,dog", "--method", "isotonic", "--target", "precision=0.7",
                 "--model", str(tiny_owlv2), "--out", str(out), "--plots", str(tmp_path / "plots"), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ECE" in printed and "person" in printed and "5-fold CV" in printed
    data = yaml.safe_load(out.read_text())
    assert data["format"] == "ovdet-calibration/1"
    assert list(data["classes"]) == ["person", "car", "dog"]
    assert data["classes"]["person"]["source"] == "class"
    assert data["classes"]["person"]["calibration"]["method"] == "isotonic"
    assert data["model"]["weights"] == weights_fingerprint(str(tiny_owlv2))
    assert data["templates"] == ["a photo of a {}"]
    assert data["report"]["after"]["ece"] < data["report"]["before"]["ece"]
    assert (tmp_path / "plots" / "reliability.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "pr" / "person.png").is_file()


def test_cli_writes_into_a_run_folder_by_default(shared_data, results_file, tmp_path, capsys):
    """Without --out the calibration goes to runs/calibrate/exp<N> (never over a file in the
    current folder); a failed run leaves no empty run folder."""
    argv = ["calibrate", "--results", str(results_file), "--annotations", str(coco_mini(shared_data)), "--folds", "0"]
    assert main(argv) == 0 and main(argv) == 0
    assert (tmp_path / "runs/calibrate/exp/calibration.yaml").is_file()
    assert (tmp_path / "runs/calibrate/exp2/calibration.yaml").is_file()
    assert not (tmp_path / "calibration.yaml").exists()
    assert "ovdet: results saved to runs/calibrate/exp2" in capsys.readouterr().err
    assert main(["calibrate", "--results", str(tmp_path / "missing.json"), "--annotations",
                 str(coco_mini(shared_data))]) == 2
    assert sorted(p.name for p in (tmp_path / "runs/calibrate").iterdir()) == ["exp", "exp2"]


def test_cli_apply_rewrites_results(shared_data, results_file, tmp_path, capsys):
    cal_path = tmp_path / "cal.yaml"
    assert main(["calibrate", "--results", str(results_file), "--annotations", str(coco_mini(shared_data)),
                 "--out", str(cal_path), "--folds", "0"]) == 0
    out = tmp_path / "calibrated.json"
    assert main(["calibrate", "--apply", str(cal_path), "--results", str(results_file), "--out", str(out)]) == 0
    original = json.loads(results_file.read_text())
    rewritten = json.loads(out.read_text())
    cal = load_calibration(cal_path)
    names = cal.by_category_id()
    assert len(rewritten) == len(original)
    for before, after in zip(original[:50], rewritten[:50]):
        assert after["raw_score"] == before["score"] and after["bbox"] == before["bbox"]
        expected = cal.calibrator_for(names[before["category_id"]])(np.array([before["score"]]))[0]
        assert after["score"] == pytest.approx(expected, abs=1e-6)
    capsys.readouterr()
    err = _one_line_error(capsys, ["calibrate", "--apply", str(cal_path), "--results", str(out)])
    assert "already" in err


def test_cli_bad_input_is_one_line(shared_data, results_file, tmp_path, capsys):
    ann = str(coco_mini(shared_data))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert "no detections" in _one_line_error(capsys, ["calibrate", "--results", str(empty), "--annotations", ann])
    err = _one_line_error(capsys, ["calibrate", "--results", str(results_file), "--annotations", ann,
                                   "--classes", "cat,unicorn"])
    assert "'unicorn'" in err
    # annotations from another dataset: none of its categories is in the vocabulary's place
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}],
                                 "categories": [{"id": 1, "name": "gear"}], "annotations": []}))
    assert "'cat'" in _one_line_error(capsys, ["calibrate", "--results", str(empty), "--annotations", str(other),
                                               "--classes", "cat"])
    assert "precision=P" in _one_line_error(capsys, ["calibrate", "--results", str(results_file), "--annotations",
                                                     ann, "--target", "recall=0.5"])
    assert "--annotations" in _one_line_error(capsys, ["calibrate", "--results", str(results_file)])
    assert "not found" in _one_line_error(capsys, ["calibrate", "--apply", str(tmp_path / "x.yaml"),
                                                   "--results", str(empty), "--annotations", ann])
    not_cal = tmp_path / "not.yaml"
    not_cal.write_text("threshold: 0.3\n")
    assert "not an ovdet calibration" in _one_line_error(
        capsys, ["calibrate", "--apply", str(not_cal), "--results", str(results_file)])


# -- consumers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted_on_images(shared_data, tiny_owlv2, tmp_path_factory) -> Path:
    """A calibration of the tiny OWLv2 fitted by running it on 8 coco-mini-val images (its
    random boxes meet people at IoU 0.1 often enough for a fit)."""
    folder = tmp_path_factory.mktemp("cal")
    out = folder / "tiny.yaml"
    code = main(["calibrate", "--images", str(shared_data / "coco-mini-val" / "images"),
                 "--annotations", str(coco_mini(shared_data)), "--model", str(tiny_owlv2), "--limit", "8",
                 "--iou", "0.1", "--classes", "person,car", "--out", str(out), "--no-progress", "--folds", "2"])
    assert code == 0
    assert (folder / "tiny.results.json").is_file()
    return out


def _detect(argv, capsys) -> list[dict]:
    assert main(argv + ["--json", "-"]) == 0
    return json.loads(capsys.readouterr().out)[0]["detections"]


def test_detect_applies_the_calibration(fitted_on_images, tiny_owlv2, chelsea_path, capsys):
    base = ["detect", str(chelsea_path), "--classes", "person,car", "--model", str(tiny_owlv2), "--max-det", "5"]
    plain = _detect(base + ["--threshold", "0"], capsys)
    scaled = _detect(base + ["--threshold", "0", "--calibration", str(fitted_on_images),
                             "--no-calibration-thresholds"], capsys)
    cal = load_calibration(fitted_on_images)
    assert len(plain) == len(scaled) == 5
    for a, b in zip(plain, scaled):  # one monotone map per class: same boxes, same order here
        assert b["box"] == a["box"] and b["raw_score"] == a["raw_score"]
        assert b["uncalibrated_score"] == a["score"]
        expected = cal.calibrator_for(a["class_name"])(np.array([a["score"]]))[0]
        assert b["score"] == pytest.approx(expected, abs=2e-5)
        assert b["score"] != pytest.approx(a["score"], abs=1e-3)
    # with the file's thresholds: only detections above their class's threshold
    kept = _detect(base + ["--calibration", str(fitted_on_images)], capsys)
    assert all(d["score"] > cal.threshold_for(d["class_name"]) for d in kept)


def test_detector_api_and_eval_style_scores_only(fitted_on_images, tiny_owlv2, chelsea_path):
    from ovdet import Detector

    det = Detector.from_pretrained(str(tiny_owlv2), calibration=str(fitted_on_images), threshold=0.0,
                                   calibration_thresholds=False, device="cpu")
    dets = det.detect(chelsea_path, ["person", "car"])
    assert len(dets) > 0 and "uncalibrated_score" in dets.extra
    with_thresholds = Detector.from_pretrained(str(tiny_owlv2), calibration=str(fitted_on_images), device="cpu")
    fewer = with_thresholds.detect(chelsea_path, ["person", "car"])
    assert len(fewer) < len(dets)
    # a class the file does not know takes the shared fit, with a warning
    with pytest.warns(UserWarning, match="shared calibration"):
        with_thresholds.detect(chelsea_path, ["person", "bicycle"])


def test_calibration_is_refused_for_another_model_or_templates(fitted_on_images, tiny_owlv2, tiny_owlvit,
                                                               chelsea_path, capsys, tmp_path):
    base = ["detect", str(chelsea_path), "--classes", "person,car", "--calibration", str(fitted_on_images)]
    err = _one_line_error(capsys, base + ["--model", str(tiny_owlvit)])
    assert "fitted for model" in err
    err = _one_line_error(capsys, base + ["--model", str(tiny_owlv2), "--templates", "photo"])
    assert "templates" in err
    # the same checkpoint copied elsewhere is the same model
    copy = tmp_path / "copy"
    shutil.copytree(tiny_owlv2, copy)
    assert main(base + ["--model", str(copy), "--json", str(tmp_path / "out.json")]) == 0
    capsys.readouterr()


def test_calibration_file_round_trip_and_malformed(fitted_on_images, tmp_path):
    cal = load_calibration(fitted_on_images)
    again = load_calibration(cal.save(tmp_path / "again.yaml"))
    assert again.to_dict() == cal.to_dict()
    s = np.linspace(0.01, 0.99, 7)
    np.testing.assert_allclose(again.apply(s, ["person"] * 7), cal.apply(s, ["person"] * 7))
    broken = tmp_path / "broken.yaml"
    broken.write_text(fitted_on_images.read_text().replace("threshold:", "threshold: 7 #", 1))
    with pytest.raises(CalibrationError, match="malformed"):
        load_calibration(broken)
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration(tmp_path / "missing.yaml")


@pytest.mark.parametrize("own", [Platt(2.0, -0.5), Isotonic((0.1, 0.4, 0.8), (0.05, 0.3, 0.9))])
def test_tensor_application_equals_numpy_and_keeps_zeros(own):
    """The detector's torch path (one broadcast op, or isotonic by searchsorted) gives the
    numpy maps' values, per class, and leaves ruled-out (zero) scores at zero."""
    import torch

    from ovdet.calibration import Calibration, ClassEntry

    shared = Platt(1.0, 3.0) if isinstance(own, Platt) else Isotonic((0.2, 0.6), (0.1, 0.5))
    cal = Calibration(method=own.method, target="f1", shared=shared, shared_threshold=0.5,
                      classes={"a": ClassEntry("a", 0.3, "class", own), "b": ClassEntry("b", 0.5)})
    scores = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    scores[:5] = 0.0
    out = cal.apply_tensor(torch.from_numpy(scores), ["A", "b", "unknown"]).numpy()
    np.testing.assert_allclose(out[5:, 0], own(scores[5:, 0]), atol=1e-5)
    for c in (1, 2):
        np.testing.assert_allclose(out[5:, c], shared(scores[5:, c]), atol=1e-5)
    assert (out[:5] == 0).all()
    # the numpy path (an ONNX export's scores) gives the torch path's values
    array = cal.apply_array(scores, ["A", "b", "unknown"])
    assert array.dtype == np.float32
    np.testing.assert_allclose(array, out, atol=1e-6, rtol=0)


def test_lvis_federated_rules(tmp_path):
    """Unverified classes are ignored; unmatched detections of a not-exhaustive class too."""
    box = {"area": 2500, "iscrowd": 0}
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 200, "neg_category_ids": [2],
                    "not_exhaustive_category_ids": [3]}],
        "categories": [{"id": i, "name": n, "frequency": "f"} for i, n in enumerate(["a", "b", "c", "d"], 1)],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], **box},
                        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [100, 100, 50, 50], **box}],
    }
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(ann))
    dataset = load_dataset(path)
    assert dataset.kind == "lvis"
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9},   # TP
        {"image_id": 1, "category_id": 2, "bbox": [10, 10, 50, 50], "score": 0.8},   # verified absent: FP
        {"image_id": 1, "category_id": 3, "bbox": [100, 100, 50, 50], "score": 0.7},  # TP
        {"image_id": 1, "category_id": 3, "bbox": [0, 100, 50, 50], "score": 0.6},   # not exhaustive: ignored
        {"image_id": 1, "category_id": 4, "bbox": [10, 10, 50, 50], "score": 0.5},   # unverified: ignored
    ]
    m = match_results(dataset, results)
    assert m.tp.tolist() == [True, False, True, False, False]
    assert m.ignored.tolist() == [False, False, False, True, True]


def test_refusal_comes_before_loading_the_weights(fitted_on_images, tiny_owlvit, monkeypatch):
    from ovdet import Detector
    from ovdet.backends import BUILDERS
    from ovdet.detector import resolve_config

    def never(*args):
        raise AssertionError("the weights were loaded before the calibration was checked")

    monkeypatch.setitem(BUILDERS, "owl", never)
    config = resolve_config(str(tiny_owlvit), calibration=str(fitted_on_images), device="cpu")
    with pytest.raises(CalibrationError, match="fitted for model"):
        Detector.from_config(config)


def test_eval_scores_calibrated_detections_without_thresholds(fitted_on_images, tiny_owlv2, shared_data, tmp_path,
                                                              capsys):
    base = ["eval", "--images", str(shared_data / "coco-mini-val" / "images"), "--annotations",
            str(coco_mini(shared_data)), "--model", str(tiny_owlv2), "--limit", "2", "--no-progress"]
    assert main(base + ["--results-out", str(tmp_path / "plain.json")]) == 0
    capsys.readouterr()
    assert main(base + ["--results-out", str(tmp_path / "cal.json"), "--calibration", str(fitted_on_images)]) == 0
    # the CLI prints ovdet's warnings as one line: 78 COCO classes the file lacks
    assert "shared calibration" in capsys.readouterr().err
    cal = load_calibration(fitted_on_images)
    names = load_dataset(coco_mini(shared_data)).category_names()
    key = lambda d: (d["image_id"], d["category_id"], tuple(d["bbox"]))  # noqa: E731
    plain = {key(d): d["score"] for d in json.loads((tmp_path / "plain.json").read_text())}
    calibrated = json.loads((tmp_path / "cal.json").read_text())
    common = [d for d in calibrated if key(d) in plain]
    assert len(common) > 20
    for d in common:
        expected = cal.calibrator_for(names[d["category_id"]])(np.array([plain[key(d)]]))[0]
        assert d["score"] == pytest.approx(expected, abs=2e-4)
    # AP ranks everything: the file's thresholds were not applied
    assert any(d["score"] <= cal.threshold_for(names[d["category_id"]]) for d in calibrated)


def test_pr_plot_legend_is_outside_the_axes():
    """The PR plot's legend lies below the axes, so it covers no part of the curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ovdet.calibrate.report import place_legend_below

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0, 0.5, 1], [1, 0.5, 0.1], label="person (12 objects)")
    ax.plot([0.9], [0.2], marker="*", label="threshold 0.310 (fit): P 0.20, R 0.90")
    legend = place_legend_below(ax)
    fig.canvas.draw()
    box, axes = legend.get_window_extent(), ax.get_window_extent()
    assert box.y1 <= axes.y0  # entirely under the plotting area
    plt.close(fig)
