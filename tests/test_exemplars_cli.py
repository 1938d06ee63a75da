"""Image exemplars on the command line (--example, --examples) and `ovdet eval --one-shot`."""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdet import Detector, Example
from ovdet.errors import OvdetError
from ovdet.eval import command
from ovdet.eval.dataset import load_dataset
from ovdet.eval.oneshot import one_shot_vocabulary
from ovdet.eval.runner import run_detector
from ovdet.exemplars import load_examples_file, parse_example

from test_cli import error_line, finish, run_cli, start_cli


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Run folders (runs/<task>/exp<N>) go under the test's temporary folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


EXACT = dict(threshold=0.0, nms_iou=1.0, max_detections=100_000, templates="{}", device="cpu", precision="fp32")


def test_parse_example_syntax(tmp_path):
    ex = parse_example("our logo=shots/logo.png:10,20.5,30,40")
    assert (ex.name, ex.image, ex.box) == ("our logo", "shots/logo.png", (10.0, 20.5, 30.0, 40.0))
    assert parse_example(r"x=C:\shots\a.png").image == r"C:\shots\a.png"  # a drive letter is no box
    assert parse_example("x=a.png").box is None
    for bad, message in [("x", "missing '='"), ("=a.png", "empty class name"), ("x=a.png:1,2,3", "x1,y1,x2,y2"),
                         ("x=", "no image path"), ("x=a.png:1,2,a,4", "must be 4 numbers"),
                         ("x=a.png:5,5,5,9", "empty box")]:
        with pytest.raises(OvdetError, match=message):
            parse_example(bad)


def test_examples_file(tmp_path, chelsea_path):
    (tmp_path / "shots").mkdir()
    shutil.copy(chelsea_path, tmp_path / "shots" / "c.jpg")
    f = tmp_path / "ex.yaml"
    f.write_text("cat:\n  - {image: shots/c.jpg, box: [10, 20, 200, 250]}\n  - shots/c.jpg\ndog: {image: shots/c.jpg}\n")
    got = load_examples_file(f)
    assert [(e.name, Path(e.image), e.box) for e in got] == [
        ("cat", tmp_path / "shots/c.jpg", (10.0, 20.0, 200.0, 250.0)),
        ("cat", tmp_path / "shots/c.jpg", None), ("dog", tmp_path / "shots/c.jpg", None)]
    for text, message in [("- a\n- b\n", "must map class names"), ("cat: []\n", "lists no exemplars"),
                          ("cat: [{img: a.png}]\n", "each exemplar is"), ("cat: [unclosed\n", "cannot read")]:
        f.write_text(text)
        with pytest.raises(OvdetError, match=message):
            load_examples_file(f)
    with pytest.raises(OvdetError, match="not found"):
        load_examples_file(tmp_path / "none.yaml")


def test_detect_with_examples_matches_the_api(tiny_owlvit, chelsea_path, astronaut_path, tmp_path):
    out = tmp_path / "r.json"
    yaml_file = tmp_path / "ex.yaml"
    yaml_file.write_text(f"face:\n  - image: {astronaut_path}\n    box: [150, 40, 350, 240]\n")
    # both CLI runs start together, and the API's answer is computed here while they run
    started = (start_cli("detect", chelsea_path, "--classes", "cat", "--example", f"cat={chelsea_path}:50,20,300,290",
                         "--examples", yaml_file, "--model", tiny_owlvit, "--threshold", 0, "--nms-iou", 1,
                         "--precision", "fp32", "--device", "cpu", "--max-det", 1000, "--example-weight", 0.25,
                         "--templates", "{}", "--json", out),
               start_cli("detect", chelsea_path, "--example", f"thing={astronaut_path}", "--model", tiny_owlvit,
                         "--json", "-"))
    det = Detector.from_pretrained(str(tiny_owlvit), **{**EXACT, "templates": "{}", "max_detections": 1000},
                                   example_weight=0.25)
    want = det.detect(chelsea_path, ["cat", Example("cat", str(chelsea_path), (50, 20, 300, 290)),
                                     Example("face", str(astronaut_path), (150, 40, 350, 240))])
    proc, alone = map(finish, started)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())[0]["detections"]
    assert {d["class_name"] for d in got} == {"cat", "face"}
    assert len(got) == len(want)
    np.testing.assert_allclose([d["score"] for d in got], want.scores, atol=1e-4)
    # exemplars alone are a vocabulary too
    assert alone.returncode == 0, alone.stderr
    assert {d["class_name"] for d in json.loads(alone.stdout)[0]["detections"]} <= {"thing"}


def test_exemplar_errors_are_one_line(tiny_owlvit, chelsea_path, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    for flag, expected in [
        ("cat", "missing '='"),
        (f"cat={chelsea_path}:10,10,500,100", "outside the exemplar image (451 x 300"),
        (f"cat={chelsea_path}:10,10,10,100", "empty box"),
        (f"cat={bad}", "cannot read the image"),
        (f"cat={tmp_path / 'none.png'}", "cannot read the image"),
    ]:
        proc = run_cli("detect", chelsea_path, "--example", flag, "--model", tiny_owlvit, cwd=tmp_path)
        assert proc.returncode == 2 and expected in error_line(proc), proc.stderr
        # a failed run leaves no empty numbered run folder behind (runs/detect/exp<N>)
        assert not list((tmp_path / "runs").glob("*/exp*")), flag
        if "cannot read" in expected:  # the path is named once, not again in the reason
            assert error_line(proc).count(flag.split("=")[1].split(":")[0]) == 1, error_line(proc)
    proc = run_cli("detect", chelsea_path, "--model", tiny_owlvit)
    assert proc.returncode == 2 and "--example" in error_line(proc)


# -- one-shot evaluation ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_coco(tmp_path_factory, chelsea_path, astronaut_path):
    """3 real photos, 4 categories: "cat" boxes in images 1 and 3, "person" in 2 and 3, "face"
    only in image 2 (cannot be shown from another image), "speck" only as a 5-pixel box."""
    root = tmp_path_factory.mktemp("oneshot")
    (root / "images").mkdir()
    shutil.copy(chelsea_path, root / "images" / "a.jpg")
    shutil.copy(astronaut_path, root / "images" / "b.jpg")
    Image.open(chelsea_path).transpose(Image.FLIP_LEFT_RIGHT).save(root / "images" / "c.jpg")
    images = [{"id": 1, "file_name": "a.jpg", "width": 451, "height": 300},
              {"id": 2, "file_name": "b.jpg", "width": 512, "height": 512},
              {"id": 3, "file_name": "c.jpg", "width": 451, "height": 300}]
    cats = [{"id": 17, "name": "cat"}, {"id": 1, "name": "person"}, {"id": 5, "name": "face"},
            {"id": 9, "name": "speck"}]
    boxes = [(1, 17, [60, 20, 260, 270]), (3, 17, [130, 20, 260, 270]), (2, 1, [100, 0, 400, 512]),
             (3, 1, [10, 10, 60, 80]), (2, 5, [170, 50, 120, 140]), (1, 9, [5, 5, 5, 5])]
    anns = [{"id": 100 + i, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, (im, c, b) in enumerate(boxes)]
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "categories": cats, "annotations": anns}))
    return root


def test_one_shot_draw(small_coco):
    dataset = load_dataset(small_coco / "ann.json")
    vocab = one_shot_vocabulary(dataset, dataset.categories, small_coco / "images", seed=3)
    assert [c["name"] for c in vocab.categories] == ["person", "cat"]  # by id; face and speck left out
    assert sorted(c["name"] for c in vocab.excluded) == ["face", "speck"]
    for image in dataset.images:
        for ex in vocab(image):  # never an exemplar from the image itself
            assert Path(ex.image).name != image["file_name"]
    assert vocab(dataset.images[0]) is vocab({"id": 999})  # no swap: one shared vocabulary object
    again = one_shot_vocabulary(dataset, dataset.categories, small_coco / "images", seed=3)
    assert again.record() == vocab.record()  # seeded
    draws = {json.dumps(one_shot_vocabulary(dataset, dataset.categories, small_coco / "images", seed=s).record()
                        ["exemplars"]) for s in range(8)}
    assert len(draws) > 1  # the seed matters


def parse(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true")
    parser = argparse.ArgumentParser(prog="ovdet")
    command.add_parser(parser.add_subparsers(dest="command"), common)
    return parser.parse_args(["eval", *map(str, argv)])


def test_eval_one_shot(tiny_owlvit, small_coco, tmp_path):
    metrics = tmp_path / "m.json"
    argv = ["--images", small_coco / "images", "--annotations", small_coco / "ann.json", "--model", tiny_owlvit,
            "--one-shot", "--seed", 3, "--results-out", tmp_path / "r.json", "--metrics-out", metrics,
            "--no-progress"]
    assert command.run(parse(argv)) == 0
    m = json.loads(metrics.read_text())
    assert m["num_categories"] == 2 and set(m["per_category"]) == {"cat", "person"}
    assert [e["category_id"] for e in m["source"]["one_shot"]["exemplars"]] == [1, 17]
    results = json.loads((tmp_path / "r.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 17}
    for argv_extra, expected in [(["--protocol", "lvis"], "coco-protocol"),
                                 (["--example", "cat=a.png"], "drop --example")]:
        with pytest.raises(OvdetError, match=expected):
            command.run(parse(argv + argv_extra))
    with pytest.raises(OvdetError, match="--seed applies to --one-shot"):
        command.run(parse([a for a in argv if a != "--one-shot"]))


def test_eval_examples_join_their_category(tiny_owlvit, small_coco, tmp_path, chelsea_path):
    dataset = load_dataset(small_coco / "ann.json")
    det = Detector.from_pretrained(str(tiny_owlvit), device="cpu", threshold=0.001)
    ex = Example("cat", str(chelsea_path), (60, 20, 320, 290))
    names = [c["name"] for c in dataset.categories]
    out = run_detector(det, dataset, small_coco / "images", classes=[*names, ex],
                       category_ids=dataset.category_ids, results_out=tmp_path / "r.json", progress=False)
    assert out.computed == 3
    argv = ["--images", small_coco / "images", "--annotations", small_coco / "ann.json", "--model", tiny_owlvit,
            "--example", f"dog={chelsea_path}", "--results-out", tmp_path / "x.json"]
    with pytest.raises(OvdetError, match="not a category"):
        command.run(parse(argv))
