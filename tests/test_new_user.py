"""What a new user trips over (issue 11), through the `ovdet` command in subprocesses:
run folders, refusing to discard unfinished work, URLs and recursive folders, one-line
warnings and errors, quiet broken pipes, --version, mistyped flags, terminal-wide listings,
single-class classification, and the tiny YOLO / composite presets offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_process import finish, start
from web import serve_folder

ROOT = Path(__file__).resolve().parent.parent


def cli_env(env_extra=None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OVDET_WEIGHTS", "COLUMNS")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env_extra or {})})
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)  # the local test server is reached directly
    return env


def start_cli(*args, cwd, env_extra=None) -> subprocess.Popen:
    """`ovdet ARGS` started and left running (`cli_process`): start independent runs together,
    then `finish` each."""
    return start(["-m", "ovdet", *args], cwd=cwd, env=cli_env(env_extra))


def run_cli(*args, cwd, env_extra=None, timeout=300):
    return finish(start_cli(*args, cwd=cwd, env_extra=env_extra), timeout=timeout)


def err_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, chelsea_path, astronaut_path):
    """coco128-style: images two folders down, and a COCO annotation file for them."""
    root = tmp_path_factory.mktemp("data")
    (root / "images" / "train2017").mkdir(parents=True)
    (root / "images" / ".cache").mkdir()
    shutil.copy(chelsea_path, root / "images" / "train2017" / "000001.jpg")
    shutil.copy(astronaut_path, root / "images" / "train2017" / "000002.jpg")
    shutil.copy(chelsea_path, root / "images" / ".cache" / "hidden.jpg")  # hidden folders are skipped
    ann = {
        "images": [{"id": 1, "file_name": "000001.jpg", "width": 451, "height": 300},
                   {"id": 2, "file_name": "000002.jpg", "width": 512, "height": 512}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 30, 300, 250], "area": 75000,
                         "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [100, 20, 300, 480], "area": 144000,
                         "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "person"}],
    }
    (root / "ann.json").write_text(json.dumps(ann))
    return root


# -- 8: one convention for output places -------------------------------------------------------
def test_detect_saves_to_numbered_run_folders_and_says_where(tmp_path, dataset, tiny_owlv2):
    args = ("detect", dataset / "images", "--classes", "cat,person", "--model", tiny_owlv2, "--threshold", "0")
    # the runs that do not depend on one another run together; only the second "cats" waits for the first
    first, second, explicit, quiet = (
        start_cli(*args, cwd=tmp_path), start_cli(*args, "--name", "cats", cwd=tmp_path),
        start_cli(*args, "--json", tmp_path / "r.json", "--project", tmp_path / "elsewhere", cwd=tmp_path),
        start_cli(*args, "--no-save", cwd=tmp_path))
    second = finish(second)
    third = start_cli(*args, "--name", "cats", cwd=tmp_path)
    first, explicit, quiet, third = map(finish, (first, explicit, quiet, third))
    assert first.returncode == 0, first.stderr
    assert err_lines(first)[-1] == "ovdet: results saved to runs/detect/exp"
    folder = tmp_path / "runs" / "detect" / "exp"
    assert sorted(p.name for p in folder.iterdir()) == ["000001.jpg", "000002.jpg", "results.json"]
    results = json.loads((folder / "results.json").read_text())
    # 6: the folder was searched recursively (train2017/), the hidden one was not
    assert [Path(r["image"]).name for r in results] == ["000001.jpg", "000002.jpg"]
    assert "000001.jpg: " in first.stdout  # the readable list is still printed
    assert err_lines(second)[-1] == "ovdet: results saved to runs/detect/cats"
    assert err_lines(third)[-1] == "ovdet: results saved to runs/detect/cats2"
    # explicit outputs are kept, and then no run folder appears
    assert explicit.returncode == 0 and (tmp_path / "r.json").is_file() and not (tmp_path / "elsewhere").exists()
    assert quiet.returncode == 0 and "saved to" not in quiet.stderr
    assert sorted(p.name for p in (tmp_path / "runs" / "detect").iterdir()) == ["cats", "cats2", "exp"]


def test_video_explain_audit_eval_use_run_folders(tmp_path, dataset, tiny_owlv2, tiny_clip):
    frames = dataset / "images" / "train2017"
    # four commands, four run folders: they run together
    video, explain, audit, ev = map(finish, (
        start_cli("video", frames, "--classes", "cat", "--model", tiny_owlv2, "--track", "--no-progress",
                  "--threshold", "0", cwd=tmp_path),
        start_cli("explain", frames / "000001.jpg", "--classes", "cat", "--model", tiny_clip, cwd=tmp_path),
        start_cli("audit", "--images", frames, "--classes", "cat,person", "--model", tiny_clip, cwd=tmp_path),
        start_cli("eval", "--images", frames, "--annotations", dataset / "ann.json", "--model", tiny_owlv2,
                  "--no-progress", cwd=tmp_path)))
    assert video.returncode == 0, video.stderr
    assert err_lines(video)[-1] == "ovdet: results saved to runs/video/exp"
    assert sorted(p.name for p in (tmp_path / "runs/video/exp").iterdir()) == ["train2017.jsonl", "train2017.mp4"]
    lines = [json.loads(l) for l in (tmp_path / "runs/video/exp/train2017.jsonl").read_text().splitlines()]
    # 9: an object has its track id on its first frame
    assert lines[0]["detections"] and all(d["track_id"] >= 0 for d in lines[0]["detections"])

    assert explain.returncode == 0, explain.stderr
    assert err_lines(explain)[-1] == "ovdet: results saved to runs/explain/exp"
    assert (tmp_path / "runs/explain/exp/index.json").is_file()

    assert audit.returncode == 0, audit.stderr
    assert err_lines(audit)[-1] == "ovdet: results saved to runs/audit/exp"
    assert {"predictions.csv", "summary.csv", "chart.png"} <= {p.name for p in (tmp_path / "runs/audit/exp").iterdir()}

    assert ev.returncode == 0, ev.stderr
    assert err_lines(ev)[-1] == "ovdet: results saved to runs/eval/exp"
    assert sorted(p.name for p in (tmp_path / "runs/eval/exp").iterdir()) == ["metrics.json", "results.json"]


# -- 3: eval never discards finished work -------------------------------------------------------
INTERRUPTED_EVAL = textwrap.dedent("""
    import sys
    from ovdet.detector import Detector
    from ovdet.cli import main
    real, calls = Detector.detect_batch, []
    def detect_batch(self, *args, **kwargs):  # Ctrl-C during the second batch
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)
    Detector.detect_batch = detect_batch
    sys.exit(main(sys.argv[1:]))
""")


def start_interrupted_eval(args, cwd) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return start(["-c", INTERRUPTED_EVAL, *args], cwd=cwd, env=env)


@pytest.fixture(scope="module")
def interrupted_evals(tmp_path_factory, dataset, tiny_owlv2) -> dict:
    """{"results-out": ..., "run-folder": ...}: (folder, eval args, finished interrupted run), the
    first step of each of the two tests below, each in its own folder; the two runs start together."""
    common = ["eval", "--images", dataset / "images" / "train2017", "--annotations", dataset / "ann.json",
              "--model", tiny_owlv2, "--batch-size", "1", "--no-progress"]
    started = {}
    for kind in ("results-out", "run-folder"):
        folder = tmp_path_factory.mktemp(kind)
        base = [*common, "--results-out", folder / "r.json"] if kind == "results-out" else common
        started[kind] = (folder, base, start_interrupted_eval(base, folder))
    return {kind: (folder, base, finish(proc)) for kind, (folder, base, proc) in started.items()}


def test_eval_refuses_to_discard_an_unfinished_run(interrupted_evals):
    tmp_path, base, stopped = interrupted_evals["results-out"]
    assert stopped.returncode == 130
    # "interrupted" once, saying where the finished work is (7)
    assert [l for l in err_lines(stopped) if "interrupted" in l] == [
        f"ovdet: interrupted; finished images are kept in {tmp_path / 'r.json.partial.jsonl'}: "
        "rerun with --resume to continue"]
    partial = tmp_path / "r.json.partial.jsonl"
    kept = partial.read_bytes()
    assert len(kept.splitlines()) == 2  # header + the finished image

    again = run_cli(*base, cwd=tmp_path)
    assert again.returncode == 2 and len(err_lines(again)) == 1, again.stderr
    line = err_lines(again)[0]
    assert "unfinished run (1 image(s) done)" in line and "--resume" in line and "--overwrite" in line
    assert partial.read_bytes() == kept and not (tmp_path / "r.json").exists()

    over = run_cli(*base, "--overwrite", cwd=tmp_path)
    assert over.returncode == 0, over.stderr
    assert not partial.exists() and {r["image_id"] for r in json.loads((tmp_path / "r.json").read_text())} == {1, 2}


def test_eval_resume_finds_the_unfinished_run_folder(interrupted_evals):
    tmp_path, base, stopped = interrupted_evals["run-folder"]
    assert stopped.returncode == 130
    unfinished = tmp_path / "runs/eval/exp/results.json.partial.jsonl"
    assert unfinished.is_file()
    fresh = run_cli(*base, cwd=tmp_path)  # a new run goes to a new folder and leaves the old one
    assert fresh.returncode == 0, fresh.stderr
    assert "ovdet: note: runs/eval/exp holds an unfinished run; --resume continues it" in fresh.stderr
    assert err_lines(fresh)[-1] == "ovdet: results saved to runs/eval/exp2" and unfinished.is_file()
    resumed = run_cli(*base, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 taken from the interrupted run" in resumed.stderr
    assert err_lines(resumed)[-1] == "ovdet: results saved to runs/eval/exp" and not unfinished.exists()
    assert (tmp_path / "runs/eval/exp/results.json").read_bytes() == (tmp_path / "runs/eval/exp2/results.json").read_bytes()


# -- 6: http(s) images ---------------------------------------------------------------------------
@pytest.fixture
def web(tmp_path, chelsea_path):
    """A local HTTP server over a folder holding chelsea.jpg."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(chelsea_path, site / "chelsea.jpg")
    with serve_folder(site) as base:
        yield base


def test_detect_reads_http_images(tmp_path, web, tiny_owlv2, chelsea_path):
    url = f"{web}/chelsea.jpg?size=full"  # a query string is not a glob
    proc = run_cli("detect", url, "--classes", "cat", "--model", tiny_owlv2, "--json", "-", "--threshold", "0",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [record] = json.loads(proc.stdout)
    assert record["image"] == url and (record["height"], record["width"]) == (300, 451)
    missing = run_cli("detect", f"{web}/nope.jpg", "--classes", "cat", "--model", tiny_owlv2, cwd=tmp_path)
    assert missing.returncode == 2 and err_lines(missing) == [
        f"ovdet: error: cannot download image {web}/nope.jpg: HTTP 404 File not found"]


def test_image_downloads_are_capped(web, monkeypatch, chelsea_path):
    from ovdet import io
    from ovdet.errors import ImageReadError

    assert io.load_image(f"{web}/chelsea.jpg").shape == (300, 451, 3)
    monkeypatch.setattr(io, "MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(ImageReadError, match="larger than the 0.001 MB ovdet downloads"):
        io.load_image(f"{web}/chelsea.jpg")


# -- 7: noise --------------------------------------------------------------------------------
def test_unknown_class_threshold_is_one_warning_line(tmp_path, tiny_owlv2, chelsea_path):
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text("cta: 0.3\n")
    proc = run_cli("detect", chelsea_path, "--classes", "cat,dog", "--model", tiny_owlv2, "--class-thresholds",
                   thresholds, "--no-save", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert err_lines(proc) == ["ovdet: warning: class_thresholds: 'cta' is not in the vocabulary "
                               "(did you mean 'cat'?); its threshold is unused"]


def test_closed_stdout_stops_quietly(tmp_path, dataset, tiny_owlv2):
    """`ovdet detect ... --json - | head`: the reader is gone before ovdet writes."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    procs = []
    for output in (["--json", "-"], []):  # the JSON at the end, and the readable list per image (run together)
        proc = subprocess.Popen([sys.executable, "-m", "ovdet", "detect", str(dataset / "images"), "--classes", "cat",
                                 "--model", str(tiny_owlv2), "--no-save", *output], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # what `head` does once it has its lines
        procs.append(proc)
    errs = [proc.communicate(timeout=300)[1] for proc in procs]
    for proc, err in zip(procs, errs):
        assert proc.returncode == 141, err.decode()
        # nothing but the progress bar: no traceback, no "Broken pipe" error line
        assert [l for l in err.decode().splitlines() if l.strip() and "%|" not in l] == [], err.decode()


# -- 9: small things -----------------------------------------------------------------------------
def test_version_and_mistyped_flags(tmp_path, chelsea_path):
    from ovdet import __version__

    version = run_cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"ovdet {__version__}"
    typo = run_cli("detect", chelsea_path, "--clases", "cat", cwd=tmp_path)
    assert typo.returncode == 2 and err_lines(typo) == [
        "ovdet detect: unknown option --clases; did you mean --classes? (see ovdet detect --help)"]
    other = run_cli("classify", chelsea_path, "--classes", "a,b", "--top-j", "2", cwd=tmp_path)
    assert other.returncode == 2 and "unknown option --top-j; did you mean --top-k?" in err_lines(other)[0]
    missing = run_cli("detect", chelsea_path, cwd=tmp_path)  # a real omission still reads as one
    assert missing.returncode == 2 and "--classes" in err_lines(missing)[0] and "required" in err_lines(missing)[0]


@pytest.mark.parametrize("columns", [60, 100])
def test_weights_list_fits_the_terminal(tmp_path, columns):
    proc = run_cli("weights", "list", cwd=tmp_path, env_extra={"COLUMNS": str(columns)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(l) for l in lines) <= columns, [l for l in lines if len(l) > columns]
    assert any(l.startswith("owlv2-b16 ") and "no: model" in l for l in lines)
    long = run_cli("weights", "list", "--long", cwd=tmp_path, env_extra={"COLUMNS": "60"})
    assert "owlv2-b16  model  google/owlv2-base-patch16-ensemble  missing" in long.stdout


def test_weights_list_names_where_a_yolo_file_was_found(tmp_path):
    """A YOLO file found through $OVDET_WEIGHTS is labelled so, one in ./weights/ as weights/."""
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "yolov8s-worldv2.pt").write_bytes(b"not loaded by list")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "yolov8m-worldv2.pt").write_bytes(b"not loaded by list")
    env = {"OVDET_WEIGHTS": str(tmp_path / "env"), "COLUMNS": "200"}
    long = run_cli("weights", "list", "--long", cwd=tmp_path, env_extra=env).stdout  # (their text towers are missing)
    assert f"yolo-world-s  model  yolov8s-worldv2.pt  OVDET_WEIGHTS: {tmp_path / 'env' / 'yolov8s-worldv2.pt'}" in long
    assert f"yolo-world-m  model  yolov8m-worldv2.pt  weights/: {tmp_path / 'weights' / 'yolov8m-worldv2.pt'}" in long


def test_classify_with_one_class_warns(tmp_path, tiny_clip, chelsea_path, astronaut_path):
    proc, two = map(finish, (  # run together
        start_cli("classify", chelsea_path, astronaut_path, "--classes", "cat", "--model", tiny_clip, cwd=tmp_path),
        start_cli("classify", chelsea_path, "--classes", "cat,dog", "--model", tiny_clip, cwd=tmp_path)))
    assert proc.returncode == 0, proc.stderr
    warnings = [l for l in err_lines(proc) if l.startswith("ovdet: warning:")]
    assert len(warnings) == 1 and "softmax over one class is always 1.000" in warnings[0]
    assert "warning" not in two.stderr


def test_explain_names_a_coco_results_file(tmp_path, tiny_clip, chelsea_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]))
    proc = run_cli("explain", chelsea_path, "--classes", "cat", "--model", tiny_clip, "--detections-from", results,
                   cwd=tmp_path)
    assert proc.returncode == 2 and len(err_lines(proc)) == 1
    assert "is a COCO results file (from `ovdet eval`?)" in err_lines(proc)[0] and "KeyError" not in proc.stderr
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"detections": []}]))
    proc = run_cli("explain", chelsea_path, "--classes", "cat", "--model", tiny_clip, "--detections-from", broken,
                   cwd=tmp_path)
    assert proc.returncode == 2 and "an entry has no 'image' field" in err_lines(proc)[0]


# -- 4: tiny YOLO, YOLO-World and the composite presets offline ------------------------------------
@pytest.mark.parametrize("config", ["yolo-world.yaml", "clip-yolo-proposals.yaml", "clip-owlv2-proposals.yaml"])
def test_composite_configs_run_offline(tmp_path, tiny_dir, chelsea_path, config):
    proc = run_cli("detect", chelsea_path, "--classes", "cat,dog", "--model", tiny_dir / config, "--json", "-",
                   cwd=tmp_path, env_extra={"YOLO_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    [record] = json.loads(proc.stdout)
    assert record["detections"], "the tiny models are tuned so that some boxes pass the presets' thresholds"
    assert {d["class_name"] for d in record["detections"]} <= {"cat", "dog"}


@pytest.mark.parametrize("preset", ["yolo-world-s", "clip-b16-yolo-proposals", "owlv2-b16"])
def test_preset_names_run_from_the_tiny_weights_layout(tmp_path, tiny_dir, chelsea_path, preset):
    proc = run_cli("detect", chelsea_path, "--classes", "cat,dog", "--model", preset, "--json", "-",
                   cwd=tmp_path, env_extra={"OVDET_WEIGHTS": str(tiny_dir / "weights"), "YOLO_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["image"] == str(chelsea_path)


def test_tiny_yolo_files_load_through_ovdets_path(tiny_dir):
    import torch

    from ovdet.backends.yolo import find_yolo_weights, load_yolo_model

    world = load_yolo_model(find_yolo_weights(tiny_dir / "yolo-world.pt"), torch.device("cpu"))
    plain = load_yolo_model(find_yolo_weights(tiny_dir / "yolo.pt"), torch.device("cpu"))
    assert type(world).__name__ == "WorldModel" and type(plain).__name__ == "DetectionModel"
    assert sum(p.numel() for p in plain.parameters()) < 500_000  # YOLOv8n has 3.2 M


def test_readme_says_how_to_install_cpu_torch():
    readme = (ROOT / "README.md").read_text()
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in readme
    start = readme.index("```bash\npip install -e . && ovdet detect")
    assert readme.index("--index-url https://download.pytorch.org/whl/cpu") > start  # the two-command start first


def test_run_folder_helpers(tmp_path, monkeypatch):
    """The public helpers other subcommands use (ovdet.kit)."""
    from ovdet.kit.parser import UsageError
    from ovdet.kit.runs import run_dir, run_dirs, saved_to

    monkeypatch.chdir(tmp_path)
    made = [run_dir("label") for _ in range(3)]
    assert made == [Path("runs/label/exp"), Path("runs/label/exp2"), Path("runs/label/exp3")]
    assert all(p.is_dir() for p in made)
    (tmp_path / "runs/label/expert").mkdir()  # another name that starts the same is not a run of "exp"
    assert run_dirs("label") == made
    assert run_dir("label", "exp", exist_ok=True) == Path("runs/label/exp")
    assert run_dir("serve", "api", project=tmp_path / "p") == tmp_path / "p" / "api"
    with pytest.raises(UsageError, match="plain folder name"):
        run_dir("label", "../escape")
    assert saved_to(made[0]) == "ovdet: results saved to runs/label/exp"
