"""`ovdet index` killed with SIGKILL between writing a chunk's regions and its image rows
(the worst moment: orphan regions on disk) resumes: the orphans are dropped, only the images
not yet done are encoded, and the index ends equal to an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import ovdet
from ovdet.index.store import Store

ROOT = Path(__file__).resolve().parent.parent

# kills its own process right after the regions of the third chunk are written
KILLED_RUN = """
import os, signal, sys
from ovdet.index import build, store
build.FLUSH_SECONDS = 0  # append every forward batch: the kill lands between batches
original = store.Store.add
calls = []
def add(self, regions, images):
    calls.append(1)
    if len(calls) == 3:
        self.regions.add(regions)
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, regions, images)
store.Store.add = add
from ovdet.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_then_resume(tiny_owlv2, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (48 + 8 * k, 64, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN)
    db = tmp_path / "db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), "index", str(folder), "--db", str(db), "--model",
                           str(tiny_owlv2), "--batch-size", "1", "--precision", "fp32", "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    store = Store.open(str(db))
    images, regions = store.count()
    assert images == 2 and regions > 0  # two chunks done, the third's regions orphaned

    index = ovdet.Index(db, precision="fp32", threshold=0.0)
    detector = index.get_detector()
    seen = []
    encode = detector.encode
    detector.encode = lambda imgs, *a, **k: (seen.extend(imgs), encode(imgs, *a, **k))[1]
    report = index.add(str(folder))
    assert (report.encoded, report.unchanged, len(seen)) == (4, 2, 4)

    reference = ovdet.Index(tmp_path / "ref", model=str(tiny_owlv2), precision="fp32", threshold=0.0)
    ref_report = reference.add(str(folder))
    assert (report.images, report.regions) == (ref_report.images, ref_report.regions) == (6, ref_report.regions)
    assert index.search("cat", top=50) == reference.search("cat", top=50)
