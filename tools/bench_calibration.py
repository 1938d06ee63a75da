#!/usr/bin/env python
"""Cost of calibration: applying a calibration file per image, and fitting one.

    python tools/bench_calibration.py                 # CPU, 2 threads
    python tools/bench_calibration.py --device cuda --reps 20

apply  one image's (P, C) candidate scores through `Calibration.apply_tensor`, as the detector
       does after scoring: P = 3,600 (OWLv2 B/16's 60 x 60 tokens), C = 80 (COCO) and 1,203
       (LVIS), every class on its own fit or all on the shared one, for each method; next to
       a plain sigmoid over the same matrix (a lower bound for any elementwise map) timed
       interleaved with it, so the ratio survives a noisy machine
fit    `calibrate_results` on synthetic detections around coco-mini-val's boxes (matching
       by pycocotools, per-class fits, 5-fold cross-validation), per method; needs the shared
       data (skipped without it)

Medians over --reps runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ovdet.calibration import Calibration, ClassEntry  # noqa: E402
from ovdet.calibrate.fit import fit  # noqa: E402
from ovdet.calibrators import METHODS  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device: str) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def bench_apply(device: str, reps: int) -> list[dict]:
    rng = np.random.default_rng(0)
    s = rng.beta(0.5, 4.0, 20_000)
    y = rng.random(len(s)) < s
    rows = []
    for classes in (80, 1203):
        names = [f"class {i}" for i in range(classes)]
        scores = torch.rand(3600, classes, device=device) ** 4  # OWL-like: most scores near 0
        for method in METHODS:
            calibrator = fit(method, s, y)
            for own in (True, False):
                entries = {n: ClassEntry(n, 0.5, "class" if own else "shared", calibrator if own else None)
                           for n in names}
                cal = Calibration(method=method, target="f1", shared=calibrator, shared_threshold=0.5,
                                  classes=entries)
                cal.apply_tensor(scores, names)  # warm-up
                t_cal, t_ref = [], []
                for _ in range(reps):
                    t_cal.append(_time(lambda: cal.apply_tensor(scores, names), device))
                    t_ref.append(_time(lambda: torch.sigmoid(scores), device))
                rows.append({"classes": classes, "method": method, "fits": "per class" if own else "shared",
                             "apply_ms": round(1e3 * statistics.median(t_cal), 2),
                             "sigmoid_ms": round(1e3 * statistics.median(t_ref), 3)})
                print(f"apply {classes:>5} classes {method:<12} {rows[-1]['fits']:<10} "
                      f"{rows[-1]['apply_ms']:>8.2f} ms  (plain sigmoid {rows[-1]['sigmoid_ms']:.3f} ms)", flush=True)
    return rows


def bench_fit(reps: int) -> list[dict]:
    import os

    sys.path.insert(0, str(ROOT / "tests"))
    from test_calibrate import perturbed_results  # the tests' synthetic detections

    from ovdet.calibrate.pipeline import calibrate_results
    from ovdet.calibrate.thresholds import Target
    from ovdet.eval.dataset import load_dataset

    data = Path(os.environ.get("OVDET_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ann = data / "coco-mini-val" / "instances_val2017.json"
    if not ann.is_file():
        print(f"fit: skipped ({ann} not found)")
        return []
    dataset = load_dataset(ann)
    results = perturbed_results(ann)
    rows = []
    for method in METHODS:
        times = [_time(lambda: calibrate_results(dataset, results, method=method, target=Target("precision", 0.8)),
                       "cpu") for _ in range(reps)]
        rows.append({"method": method, "detections": len(results), "seconds": round(statistics.median(times), 3)})
        print(f"fit   {method:<12} {len(results)} detections, 80 classes, 5-fold CV: {rows[-1]['seconds']:.2f} s",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--only", default="apply,fit", help="comma-separated: apply, fit")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    report = {"device": args.device, "threads": torch.get_num_threads()}
    if "apply" in only:
        report["apply"] = bench_apply(args.device, args.reps)
    if "fit" in only:
        report["fit"] = bench_fit(max(1, args.reps // 3))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
