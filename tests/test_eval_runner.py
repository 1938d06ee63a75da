"""`ovdet eval` end to end with a tiny OWLv2 checkpoint on the 79 real COCO mini-val images:
running the model, resuming interrupted runs, skipped images, re-scoring results files."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ovdet.detector import Detector
from ovdet.errors import ImageReadError, OvdetError
from ovdet.eval import command
from ovdet.eval.dataset import load_dataset
from ovdet.eval.ovcoco import load_split
from ovdet.eval.runner import ClassesFileError, ResumeError, partial_path, prompt_name, run_detector, vocabulary


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Run folders (runs/<task>/exp<N>) go under the test's temporary folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str]) -> argparse.Namespace:
    """The namespace `ovdet eval ...` gives, from a parser built with `command.add_parser`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true")
    parser = argparse.ArgumentParser(prog="ovdet")
    sub = parser.add_subparsers(dest="command")
    command.add_parser(sub, common)
    return parser.parse_args(["eval", *map(str, argv)])


@pytest.fixture(scope="module")
def mini_val(shared_data) -> Path:
    return shared_data / "coco-mini-val"


@pytest.fixture(scope="module")
def coco(mini_val):
    return load_dataset(mini_val / "instances_val2017.json")


@pytest.fixture(scope="module")
def detector(tiny_owlv2) -> Detector:
    return Detector.from_pretrained(str(tiny_owlv2), device="cpu", threshold=0.001)


class Interrupting:
    """A detector that is interrupted (Ctrl-C) during its `fail_on`-th batch."""

    def __init__(self, inner: Detector, fail_on: int):
        self.inner, self.fail_on, self.calls, self.images = inner, fail_on, 0, 0
        self.config = inner.config

    def detect_batch(self, images, classes, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        self.images += len(images)
        return self.inner.detect_batch(images, classes, **kwargs)


def coco_vocab(dataset):
    return vocabulary(dataset.categories), dataset.category_ids


# -- the full path ------------------------------------------------------------------------------
def test_full_eval_on_79_real_images(tiny_owlv2, mini_val, coco, tmp_path, capsys):
    results_out, metrics_out, plots = tmp_path / "results.json", tmp_path / "metrics.json", tmp_path / "plots"
    args = parse([
        "--images", mini_val / "images", "--annotations", mini_val / "instances_val2017.json",
        "--model", tiny_owlv2, "--results-out", results_out, "--metrics-out", metrics_out,
        "--plots", plots, "--batch-size", 8, "--device", "cpu", "--no-progress",
    ])
    assert command.run(args) == 0
    out, err = capsys.readouterr()
    assert "protocol: coco" in out and "per-category AP" in out and "img/s" in err

    results = json.loads(results_out.read_text())
    assert results, "the tiny model at threshold 0.001 always finds something"
    assert {r["image_id"] for r in results} <= set(coco.image_ids)
    assert {r["category_id"] for r in results} <= set(coco.category_ids)  # mapped back from class indices
    assert len({r["image_id"] for r in results}) > 70
    assert max(sum(r["image_id"] == i for r in results) for i in coco.image_ids) <= 100  # --max-det default for coco
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and r["bbox"][3] >= 0 for r in results)

    metrics = json.loads(metrics_out.read_text())
    expected = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
                "protocol", "num_images", "per_category"}
    assert expected <= set(metrics)
    assert metrics["num_images"] == 79 and metrics["num_images_skipped"] == 0
    assert all(-1.0 <= metrics[k] <= 1.0 for k in expected - {"protocol", "num_images", "per_category"})
    assert metrics["source"]["detector"]["threshold"] == 0.001
    assert len(metrics["per_category"]) == 80
    assert (plots / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not partial_path(results_out).exists()

    # the results file scores the same through --results
    rescored = tmp_path / "rescored.json"
    assert command.run(parse(["--results", results_out, "--annotations", mini_val / "instances_val2017.json",
                              "--metrics-out", rescored])) == 0
    again = json.loads(rescored.read_text())
    for key in expected - {"per_category"}:
        assert again[key] == metrics[key], key
    assert again["per_category"] == metrics["per_category"]


def test_ov_coco_and_lvis_runs_use_their_vocabularies(tiny_owlv2, mini_val, tmp_path, capsys):
    split = load_split()
    out = tmp_path / "ov.json"
    args = parse(["--images", mini_val / "images", "--annotations", mini_val / "instances_val2017.json",
                  "--protocol", "ov-coco", "--model", tiny_owlv2, "--results-out", out, "--metrics-out",
                  tmp_path / "ovm.json", "--limit", 4, "--device", "cpu", "--no-progress"])
    assert command.run(args) == 0
    assert {r["category_id"] for r in json.loads(out.read_text())} <= set(split.ids)
    m = json.loads((tmp_path / "ovm.json").read_text())
    assert m["source"]["vocabulary_size"] == 65 and {"AP50_novel", "AP50_base", "AP50_all"} <= set(m)

    out = tmp_path / "lvis.json"
    args = parse(["--images", mini_val / "images", "--annotations", mini_val / "lvis_style_val2017.json",
                  "--model", tiny_owlv2, "--results-out", out, "--metrics-out", tmp_path / "lm.json",
                  "--limit", 3, "--lvis-mode", "fixed", "--device", "cpu", "--no-progress"])
    assert command.run(args) == 0  # protocol lvis chosen from the annotation style
    m = json.loads((tmp_path / "lm.json").read_text())
    assert m["protocol"] == "lvis" and m["lvis_mode"] == "fixed" and m["source"]["vocabulary_size"] == 1203
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"} <= set(m)
    assert m["num_images"] == 3
    assert "fixed AP (10,000 detections per category" in capsys.readouterr().out


# -- resume -------------------------------------------------------------------------------------
def test_resume_after_interrupt_gives_the_same_file(detector, coco, mini_val, tmp_path):
    classes, ids = coco_vocab(coco)
    kwargs = dict(classes=classes, category_ids=ids, limit=16, batch_size=4, progress=False)
    straight = run_detector(detector, coco, mini_val / "images", results_out=tmp_path / "a.json", **kwargs)
    assert straight.computed == 16

    target = tmp_path / "b.json"
    with pytest.raises(KeyboardInterrupt):
        run_detector(Interrupting(detector, fail_on=3), coco, mini_val / "images", results_out=target, **kwargs)
    partial = partial_path(target)
    assert not target.exists() and len(partial.read_text().splitlines()) == 1 + 8  # header + 2 batches
    with open(partial, "a") as fh:  # as if killed in the middle of writing the next line
        fh.write('{"image_id": %d, "results": [{"image_id"' % coco.image_ids[8])

    counting = Interrupting(detector, fail_on=-1)
    resumed = run_detector(counting, coco, mini_val / "images", results_out=target, resume=True, **kwargs)
    assert (resumed.resumed, resumed.computed, counting.images) == (8, 8, 8)  # finished images not recomputed
    assert target.read_bytes() == (tmp_path / "a.json").read_bytes()
    assert resumed.image_ids == straight.image_ids and not partial.exists()


def test_resume_refuses_other_settings(detector, coco, mini_val, tmp_path):
    classes, ids = coco_vocab(coco)
    target = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        run_detector(Interrupting(detector, fail_on=2), coco, mini_val / "images", classes=classes,
                     category_ids=ids, results_out=target, limit=8, batch_size=4, progress=False)
    with pytest.raises(ResumeError, match="threshold"):
        run_detector(detector, coco, mini_val / "images", classes=classes, category_ids=ids, results_out=target,
                     limit=8, batch_size=4, threshold=0.3, resume=True, progress=False)


def test_resume_after_the_process_is_killed(tiny_owlv2, mini_val, tmp_path):
    """A real `kill -9` in the middle of a run, then `--resume`."""
    ann = mini_val / "instances_val2017.json"
    common = ["--images", mini_val / "images", "--annotations", ann, "--model", tiny_owlv2, "--limit", 12,
              "--batch-size", 2, "--device", "cpu", "--no-progress"]
    straight = tmp_path / "straight.json"
    assert command.run(parse([*common, "--results-out", straight])) == 0

    killed = tmp_path / "killed.json"
    script = textwrap.dedent("""
        import sys, time, argparse
        from ovdet.detector import Detector
        from ovdet.eval import command
        slow = Detector.detect_batch
        def detect_batch(self, *args, **kwargs):  # slow enough to be killed mid-run
            time.sleep(0.4)
            return slow(self, *args, **kwargs)
        Detector.detect_batch = detect_batch
        common = argparse.ArgumentParser(add_help=False)
        parser = argparse.ArgumentParser()
        command.add_parser(parser.add_subparsers(dest="command"), common)
        sys.exit(command.run(parser.parse_args(sys.argv[1:])))
    """)
    argv = ["eval", *map(str, common), "--results-out", str(killed)]
    proc = subprocess.Popen([sys.executable, "-c", script, *argv], cwd=tmp_path, env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = partial_path(killed)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and len(partial.read_bytes().splitlines()) >= 1 + 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    done = len(partial.read_bytes().splitlines()) - 1
    assert 4 <= done < 12 and not killed.exists()

    assert command.run(parse([*common, "--results-out", killed, "--resume"])) == 0
    assert killed.read_bytes() == straight.read_bytes()


# -- images missing, vocabulary files -------------------------------------------------------------
def test_missing_images_are_skipped_and_counted(tiny_owlv2, mini_val, coco, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for image in coco.images[:8:2]:  # 4 of the first 8 images are present
        os.symlink(mini_val / "images" / image["file_name"], folder / image["file_name"])
    metrics_out = tmp_path / "m.json"
    args = parse(["--images", folder, "--annotations", mini_val / "instances_val2017.json", "--model", tiny_owlv2,
                  "--limit", 8, "--results-out", tmp_path / "r.json", "--metrics-out", metrics_out,
                  "--device", "cpu", "--no-progress"])
    assert command.run(args) == 1  # partial success, as `ovdet detect` reports skipped inputs
    out, err = capsys.readouterr()
    assert err.count("skipping") == 4 and coco.images[1]["file_name"] in err
    assert "4 evaluated, 4 skipped" in out
    m = json.loads(metrics_out.read_text())
    assert (m["num_images"], m["num_images_skipped"]) == (4, 4)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageReadError, match="none of the 8 image"):
        command.run(parse(["--images", empty, "--annotations", mini_val / "instances_val2017.json",
                           "--model", tiny_owlv2, "--limit", 8, "--results-out", tmp_path / "x.json",
                           "--device", "cpu", "--no-progress"]))


def test_vocabulary_sources(coco, mini_val, tmp_path):
    cats = coco.categories
    assert vocabulary(cats)[:3] == ["person", "bicycle", "car"]
    assert prompt_name("traffic_light") == "traffic light"

    text = tmp_path / "names.txt"
    text.write_text("\n".join(f"a {c['name']}" for c in cats) + "\n\n")
    assert vocabulary(cats, text)[0] == "a person"
    by_id = tmp_path / "names.json"
    by_id.write_text(json.dumps({str(c["id"]): c["name"].upper() for c in cats}))
    assert vocabulary(cats, by_id)[1] == "BICYCLE"
    assert vocabulary(cats, mini_val / "instances_val2017.json") == vocabulary(cats)

    text.write_text("person\nbicycle\n")
    with pytest.raises(ClassesFileError, match="2 name"):
        vocabulary(cats, text)
    by_id.write_text(json.dumps({"1": "person", "2": "bicycle"}))
    with pytest.raises(ClassesFileError, match="no name for category id 3"):
        vocabulary(cats, by_id)
    # another dataset's annotation file: same ids, other meanings (LVIS-like names)
    other = tmp_path / "other_instances.json"
    other.write_text(json.dumps({"categories": [{"id": c["id"], "name": f"thing_{c['id']}"} for c in cats]}))
    with pytest.raises(ClassesFileError, match=r"renames 80 of 80 categories by id \(id 1: 'person' -> 'thing_1'\)"):
        vocabulary(cats, other)
    # a few renamed classes in a file of the same dataset are fine
    renamed = [{"id": c["id"], "name": "human" if c["name"] == "person" else c["name"]} for c in cats]
    other.write_text(json.dumps({"categories": renamed}))
    assert vocabulary(cats, other)[0] == "human"


def test_option_errors_are_one_line(mini_val, tmp_path):
    ann = mini_val / "instances_val2017.json"
    (tmp_path / "r.json").write_text("[]")
    for argv, expected in [
        (["--results", tmp_path / "r.json", "--annotations", ann, "--limit", 3], "--limit only applies"),
        (["--results", tmp_path / "r.json", "--annotations", ann, "--model", "x"], "--model only applies"),
        (["--results", tmp_path / "r.json", "--annotations", ann, "--lvis-mode", "fixed"], "--lvis-mode applies"),
        (["--results", tmp_path / "r.json", "--annotations", tmp_path / "r.json"], "a results file?"),
        (["--images", tmp_path / "nope", "--annotations", ann], "image folder not found"),
    ]:
        with pytest.raises(OvdetError) as exc:
            command.run(parse(argv))
        assert expected in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(SystemExit):  # argparse: one of --images / --results is required
        parse(["--annotations", ann])
