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
