"""The README's Python examples, run as written.

Every ```python block of README.md is executed in order in one namespace (later blocks use
names the earlier ones define, as a reader would), in a folder holding the images and the
video the examples name, with preset names resolved through the documented weights lookup
($OVDET_WEIGHTS/<preset>/) to tiny random checkpoints (tools/make_tiny_models.py's layout).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def named_files(code: str, suffixes: tuple[str, ...]) -> set[str]:
    """String literals in the examples that name files with these suffixes ("street.jpg")."""
    return {m for m in re.findall(r"[\"']([\w./-]+)[\"']", code) if m.lower().endswith(suffixes)}


def write_video(path: Path, frame_rgb: np.ndarray, frames: int = 6) -> None:
    import cv2

    h, w = frame_rgb.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for i in range(frames):
        writer.write(np.ascontiguousarray(np.roll(frame_rgb, 4 * i, axis=1)[..., ::-1]))
    writer.release()


@pytest.fixture
def reader_folder(tmp_path, monkeypatch, tiny_dir, chelsea_path):
    """A working folder with the files the README names, and OVDET_WEIGHTS at the tiny layout."""
    from PIL import Image

    code = "\n".join(python_blocks())
    for name in named_files(code, (".jpg", ".jpeg", ".png")):
        shutil.copy(chelsea_path, tmp_path / name)
    for name in named_files(code, (".mp4",)):
        write_video(tmp_path / name, np.asarray(Image.open(chelsea_path).convert("RGB")))
    for folder in re.findall(r"\(\s*[\"']([\w.-]+)/[\"']", code):  # input folders: a call's first argument ("photos/")
        (tmp_path / folder).mkdir(exist_ok=True)
        shutil.copy(chelsea_path, tmp_path / folder / "chelsea.jpg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OVDET_WEIGHTS", str(tiny_dir / "weights"))
    return tmp_path


def test_the_readme_has_python_examples():
    blocks = python_blocks()
    assert len(blocks) >= 5
    names = "\n".join(blocks)
    for used in ("ovdet.adapters.", "ovdet.draw.annotate", "to_supervision", "from_supervision", "dets.labels"):
        assert used in names, used


def test_readme_python_blocks_run_as_written(reader_folder):
    namespace: dict = {"__name__": "readme"}
    for i, code in enumerate(python_blocks()):
        if code.startswith("# needs your own"):  # the user's data: compiled (names and syntax), not run
            compile(code, f"README.md python block {i + 1}", "exec")
            continue
        try:
            exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the block: the traceback alone points into exec
            raise AssertionError(f"README python block {i + 1} fails:\n{code}") from exc
    # what the blocks promise holds on their results
    from ovdet import Detections

    dets, same = namespace["dets"], namespace["same"]
    assert isinstance(dets, Detections) and isinstance(same, Detections)
    assert len(same) == len(namespace["sv_dets"]) and same.labels == namespace["sv_dets"].data["class_name"].tolist()
    assert namespace["picture"].dtype == np.uint8 and namespace["picture"].ndim == 3
    heat = namespace["heat"]
    assert heat.dtype == np.float32 and heat.min() >= 0 and heat.max() <= 1


def test_documented_names_work_after_a_plain_import():
    """`import ovdet` then `ovdet.adapters...` / `ovdet.draw...`, in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import ovdet, numpy as np\n"
            "d = ovdet.Detections(xyxy=[[1, 2, 30, 40]], scores=[0.9], class_ids=[1], class_names=('cat', 'dog'),"
            " image_size=(50, 60))\n"
            "sv = ovdet.adapters.to_supervision(d)\n"
            "back = ovdet.adapters.from_supervision(sv, d.class_names, d.image_size)\n"
            "img = ovdet.draw.annotate(np.zeros((50, 60, 3), np.uint8), d)\n"
            "print(back.labels, img.shape, int(img.sum() > 0))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['dog'] (50, 60, 3) 1"


def test_supervision_round_trip_keeps_every_field():
    from ovdet import Detections

    d = Detections(xyxy=[[1, 2, 30, 40], [5, 5, 9, 9]], scores=[0.9, 0.3], class_ids=[1, 0],
                   class_names=("cat", "dog"), image_size=(50, 60), raw_scores=[2.5, -1.0], tracker_ids=[7, 3])
    sv_dets = d.to_supervision()
    assert sv_dets.data["class_name"].tolist() == ["dog", "cat"] and sv_dets.tracker_id.tolist() == [7, 3]
    back = Detections.from_supervision(sv_dets, d.class_names, d.image_size)
    for field in ("xyxy", "scores", "class_ids", "raw_scores", "tracker_ids"):
        assert np.array_equal(getattr(back, field), getattr(d, field)), field
    assert back.image_size == (50, 60) and back.labels == ["dog", "cat"]
