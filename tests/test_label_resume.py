"""`ovdet label`: bad input (one line, exit 2), nothing overwritten by accident, and resume after
a SIGKILL giving exactly the uninterrupted run's annotations without recomputing images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ovdet.cli.app import main
from ovdet.detector import Detector
from ovdet.label import label

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def images(shared_data) -> list[str]:
    return sorted(str(p) for p in (shared_data / "coco8" / "images").glob("*/*.jpg"))


def _one_line_exit_2(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_one_line_exit_2(tmp_path, images, tiny_owlv2, capsys):
    src = images[0]
    out = str(tmp_path / "out")
    base = ["label", src, "--out", out, "--model", str(tiny_owlv2)]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert "empty ontology" in _one_line_exit_2(capsys, base + ["--ontology", str(empty)])
    no_prompts = tmp_path / "np.yaml"
    no_prompts.write_text("car: [car]\nperson: []\n")
    assert "'person' has no prompts" in _one_line_exit_2(capsys, base + ["--ontology", str(no_prompts)])
    assert "unknown format 'tfrecord'" in _one_line_exit_2(capsys, base + ["--classes", "car", "--format", "coco,tfrecord"])
    assert "sum to 0.9" in _one_line_exit_2(capsys, base + ["--classes", "car", "--split", "train=0.7,val=0.2"])
    assert "--resume" in _one_line_exit_2(capsys, base + ["--classes", "car", "--resume", "--overwrite"])
    assert not Path(out).exists()  # nothing written for any of these
    Path(out).mkdir()
    (Path(out) / "precious.txt").write_text("keep me")
    err = _one_line_exit_2(capsys, base + ["--classes", "car"])
    assert "not empty" in err and "--overwrite" in err
    assert "holds no ovdet label run" in _one_line_exit_2(capsys, base + ["--classes", "car", "--resume"])
    assert (Path(out) / "precious.txt").read_text() == "keep me"
    assert "image source not found" in _one_line_exit_2(
        capsys, ["label", str(tmp_path / "nope"), "--out", str(tmp_path / "o2"), "--classes", "car"])


def _coco_annotations(out: Path) -> list[dict]:
    return json.loads((out / "coco" / "train.json").read_text())["annotations"]


SLOW_RUN = """
import sys, time
from ovdet.detector import Detector
original = Detector.detect_batch
def slow(self, *args, **kwargs):
    time.sleep(0.5)  # so that the test can kill the run part-way
    return original(self, *args, **kwargs)
Detector.detect_batch = slow
from ovdet.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_then_resume(tmp_path, images, tiny_owlv2, monkeypatch):
    common = dict(model=tiny_owlv2, threshold=0.2, batch_size=1, progress=False)
    onto = {"car": ["car", "automobile"], "person": ["person"]}
    reference = label(images, onto, tmp_path / "ref", formats="coco,yolo", **common)

    out = tmp_path / "killed"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_RUN)
    onto_file = tmp_path / "onto.yaml"
    onto_file.write_text("car: [car, automobile]\nperson: [person]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), "label", *images, "--out", str(out), "--ontology",
                             str(onto_file), "--model", str(tiny_owlv2), "--threshold", "0.2", "--batch-size", "1",
                             "--format", "coco,yolo"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / ".ovdet-label"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(state.glob("chunk-*.jsonl"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(state.glob("chunk-*.jsonl")))
    assert 3 <= finished < len(images), "the run was not killed part-way"
    assert not (out / "coco").exists() and not (out / "report.json").exists()  # export only when all are done

    # a resume with other detection settings is refused, naming the difference
    with pytest.raises(Exception, match=r"settings differ .*detector\.threshold"):
        label(images, onto, out, formats="coco,yolo", resume=True, **{**common, "threshold": 0.3})

    seen = []
    original = Detector.detect_batch

    def counting(self, imgs, *args, **kwargs):
        seen.append(len(imgs))
        return original(self, imgs, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect_batch", counting)
    resumed = label(images, onto, out, formats="coco,yolo", resume=True, **common)
    assert sum(seen) == len(images) - finished  # finished images are not recomputed
    assert resumed["run"]["resumed"] == finished and resumed["run"]["computed"] == len(images) - finished
    assert _coco_annotations(out) == _coco_annotations(tmp_path / "ref")
    for p in (tmp_path / "ref" / "yolo" / "labels" / "train").iterdir():
        assert (out / "yolo" / "labels" / "train" / p.name).read_text() == p.read_text()
    assert resumed["classes"] == reference["classes"]

    # resuming a finished run only re-exports (here with another format and a split)
    seen.clear()
    again = label(images, onto, out, formats="voc", split="train=0.75,val=0.25", resume=True, **common)
    assert seen == [] and again["run"]["resumed"] == len(images)
    assert (out / "voc" / "ImageSets" / "Main" / "val.txt").read_text().count("\n") == 2


def test_overwrite_replaces_only_ovdet_outputs(tmp_path, images, tiny_owlv2):
    out = tmp_path / "out"
    label(images[:2], "car", out, formats="coco", model=tiny_owlv2, progress=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty"):
        label(images[:2], "car", out, formats="coco", model=tiny_owlv2, progress=False)
    report = label(images[:1], "car", out, formats="yolo", model=tiny_owlv2, progress=False, overwrite=True)
    assert report["images"] == 1
    assert not (out / "coco").exists() and (out / "yolo").is_dir()
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_with_fewer_formats_removes_the_dropped_ones_and_voc_names_ovdet(tmp_path, tiny_owlv2, chelsea_path,
                                                                                astronaut_path):
    """Through the CLI: VOC XML says <database>ovdet</database> (not supervision's roboflow.ai);
    resuming a finished run with fewer --format removes the dropped formats' folders, which
    report.json no longer lists, and nothing else."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}

    def run(*extra):
        proc = subprocess.run([sys.executable, "-m", "ovdet", "label", str(chelsea_path), str(astronaut_path),
                               "--classes", "cat", "--out", str(out), "--model", str(tiny_owlv2), *extra],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]

    run("--format", "coco,yolo,voc")
    xml = (out / "voc" / "Annotations" / "chelsea.xml").read_text()
    assert "<database>ovdet</database>" in xml and "roboflow" not in xml
    (out / "mine").mkdir()  # the user's own folder
    run("--format", "coco", "--resume")
    assert sorted(json.loads((out / "report.json").read_text())["run"]["outputs"]) == ["coco"]
    assert (out / "coco").is_dir() and not (out / "yolo").exists() and not (out / "voc").exists()
    assert (out / "mine").is_dir()


def test_ctrl_c_says_interrupted_once_and_default_run_folder(tmp_path, images, tiny_owlv2, capsys, monkeypatch):
    """Ctrl-C in the middle of `ovdet label` prints one line (where the finished chunks are),
    not that line and a second bare "interrupted"; without --out the run goes to
    runs/label/exp<N>, and a run that fails before writing leaves no empty run folder."""
    monkeypatch.chdir(tmp_path)
    original, calls = Detector.detect_batch, []

    def interrupting(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect_batch", interrupting)
    argv = ["label", *images[:4], "--classes", "car", "--model", str(tiny_owlv2), "--batch-size", "1", "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("interrupted") == 1, err
    assert "chunk(s) are saved in runs/label/exp/.ovdet-label" in err
    monkeypatch.setattr(Detector, "detect_batch", original)
    assert main(argv + ["--resume"]) == 0  # the latest run folder holding a run
    assert "results saved to runs/label/exp" in capsys.readouterr().err
    assert (tmp_path / "runs/label/exp/report.json").is_file()
    assert "not found" in _one_line_exit_2(capsys, ["label", str(tmp_path / "nope"), "--classes", "car"])
    assert sorted(p.name for p in (tmp_path / "runs/label").iterdir()) == ["exp"]
