#!/usr/bin/env python
"""Speed of `ovdet label` against `ovdet detect --json` on the same images, and of the Ray engine.

A full-size OWL-ViT B/32 with random weights (speed does not depend on their values), real
COCO photos from the shared data folder. Everything runs in ONE process: the local commands
are run through the CLI entry point, interleaved (detect, label, detect, label, ...), and
timed end to end (model load included, for both); the figures are medians.

    python tools/bench_label.py                            # 32 photos, 3 reps, Ray 1 and 2 workers
    python tools/bench_label.py --images 79 --reps 5 --no-ray --json bench_label.json

Reports: images/s of each, the labelling overhead (label time / detect time - 1; the target
is under 10 %), and the Ray engine with 1 worker (2 CPUs) and 2 workers (1 CPU each), Ray
started once beforehand (actor start and model load per run are included).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

CLASSES = "person,car,bicycle,dog,cat,chair,cup,bottle,umbrella,bus"


def shared_images(count: int) -> list[str]:
    base = Path(os.environ.get("OVDET_SHARED_DATA", ROOT.parent / "shared" / "data")) / "coco-mini-val" / "images"
    images = sorted(str(p) for p in base.glob("*.jpg"))[:count]
    if not images:
        raise SystemExit(f"no photos in {base}: set OVDET_SHARED_DATA")
    return images


def run_cli(argv: list[str]) -> float:
    from ovdet.cli.app import main

    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    if rc != 0:
        raise SystemExit(f"ovdet {' '.join(argv[:1])} failed with exit code {rc}")
    return time.perf_counter() - start


class InstantDetector:
    """Answers like a detector at no cost: 10 fixed boxes per image over the prompts."""

    def __init__(self, config):
        self.config = config

    def detect_batch(self, images, classes, threshold=None, negatives=None, batch_size=None):
        import numpy as np

        from ovdet.structures import Detections

        out = []
        for im in images:
            h, w = im.shape[:2]
            xy = np.linspace(0, 0.8, 10)[:, None] * np.array([w, h, w, h]) + np.array([0, 0, w / 5, h / 5])
            out.append(Detections(xyxy=xy.astype(np.float32), scores=np.linspace(0.9, 0.3, 10, dtype=np.float32),
                                  class_ids=np.arange(10) % len(classes), class_names=tuple(classes),
                                  image_size=(h, w)))
        return out


def label_machinery(images: list[str], work: Path, batch_size: int, reps: int = 3) -> float:
    """Seconds per image of `label` with an instant detector (median of `reps`)."""
    from ovdet.detector import resolve_config
    from ovdet.label import label

    det = InstantDetector(resolve_config("owlvit-b32", batch_size=batch_size))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        label(images, CLASSES, work / "machinery", formats="coco,yolo", detector=det, overwrite=True, progress=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(images)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32, help="photos from coco-mini-val (default 32)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from bench import save_owl  # the full-size random OWL-ViT B/32 of tools/bench.py

    images = shared_images(args.images)
    work = Path(tempfile.mkdtemp(prefix="ovdet-bench-label-"))
    model = save_owl("owlvit-b32", work / "owlvit-b32")
    common = ["--classes", CLASSES, "--model", str(model), "--batch-size", str(args.batch_size)]
    detect = ["detect", *images, *common, "--json", str(work / "detect.json")]
    label = ["label", *images, *common, "--out", str(work / "label"), "--overwrite", "--format", "coco,yolo"]
    run_cli(detect)  # warm-up: text embeddings cached, libraries loaded
    times: dict[str, list[float]] = {"detect --json": [], "label": []}
    for _ in range(args.reps):
        times["detect --json"].append(run_cli(detect))
        times["label"].append(run_cli(label))
    med = {k: statistics.median(v) for k, v in times.items()}
    figures = {
        "images": len(images), "threads": args.threads, "batch_size": args.batch_size, "model": "owlvit-b32 (random)",
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "images_per_second": {k: round(len(images) / v, 3) for k, v in med.items()},
        "label_overhead": round(med["label"] / med["detect --json"] - 1, 4),
    }
    print(f"{len(images)} photos, OWL-ViT B/32 (random weights), {args.threads} threads, batch {args.batch_size}")
    for k, v in med.items():
        print(f"  {k:<14} {len(images) / v:6.2f} img/s  (median of {args.reps}: {v:.2f} s)")
    print(f"  label overhead vs detect --json: {100 * figures['label_overhead']:+.1f} %")

    # what labelling adds, without the model's noise: the same run with a detector that answers
    # instantly (10 boxes an image), so everything timed is ovdet label's own work (image decode,
    # prompt merging, shard writes, export, report) against detect's image decode alone
    figures["label_without_model_s_per_image"] = round(label_machinery(images, work, args.batch_size), 4)
    per_image_detect = med["detect --json"] / len(images)
    figures["label_machinery_share_of_detect"] = round(figures["label_without_model_s_per_image"] / per_image_detect, 4)
    print(f"  label without the model: {1000 * figures['label_without_model_s_per_image']:.1f} ms/img "
          f"({100 * figures['label_machinery_share_of_detect']:.1f} % of detect's {per_image_detect:.2f} s/img; "
          "image decode included)")

    if not args.no_ray:
        import ray

        ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
        try:
            ray_times: dict[str, float] = {}
            for workers in (1, 2):
                cpus = max(1, args.threads // workers)
                argv_ray = [*label, "--engine", "ray", "--workers", str(workers), "--cpus-per-worker", str(cpus)]
                ray_times[f"ray {workers} worker(s) x {cpus} CPU"] = statistics.median(
                    run_cli(argv_ray) for _ in range(max(1, args.reps - 1)))
        finally:
            ray.shutdown()
        figures["ray_images_per_second"] = {k: round(len(images) / v, 3) for k, v in ray_times.items()}
        for k, v in ray_times.items():
            print(f"  {k:<24} {len(images) / v:6.2f} img/s  ({v:.2f} s, actor start and model load included)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
