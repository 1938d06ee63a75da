#!/usr/bin/env python
"""One prepared command for a CUDA machine: the CUDA tests, then the GPU benchmarks.

    python tools/gpu_check.py                 # everything, about 7-9 minutes on one GPU
    python tools/gpu_check.py --skip-bench    # the tests only
    python tools/gpu_check.py --out gpu.json  # the figures as JSON too

1. `pytest -m cuda tests/test_cuda.py`: OWL (OWLv2 and OWL-ViT), CLIP region scoring and
   YOLO-World on the GPU against the CPU fp32 reference within the tolerances stated in
   tests/test_cuda.py, and the batched resize on the device.
2. tools/bench.py on the GPU, each section in its own process with its own time limit:
     peak + owl   OWLv2 B/16 at 960 px, batch 16, fp16 and bf16: images/s, the forward's
                  FLOP/s and its fraction of the bf16 matmul peak measured alongside
     owl compile  the same with `compile: true` (torch.compile of the image tower) to keep
                  only if it measures faster
     yolo         YOLO-World-S and the YOLO proposer vs ultralytics' predict (half=True)
     owl-direct   OWL-ViT B/32 end to end vs the direct transformers call, 20 classes
     video        `ovdet video` on a 720p clip vs the detector's own frames/s
     sam3         SAM 3 full size at 1008 px in bf16, 1, 10 and 80 classes: ovdet vs transformers
                  once per class (all 80 run), and ovdet's vision / text / DETR / masks split
Stops with exit status 1 when a test fails; a benchmark that fails or runs out of time is
reported and the others still run. Needs no network (random full-size weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, bench.py arguments, seconds allowed): sized so that the whole run stays under 10 min
BENCHES = [
    ("owlv2-b16-batch16", ["--only", "peak,owl", "--owl", "owlv2-b16", "--batch", "16", "--reps", "5"], 110),
    ("owlv2-b16-batch16-compiled", ["--only", "owl", "--owl", "owlv2-b16", "--batch", "16", "--reps", "5",
                                    "--compile"], 120),
    ("yolo", ["--only", "yolo", "--reps", "10"], 60),
    ("owl-direct", ["--only", "owl-direct", "--reps", "10"], 45),
    ("video", ["--only", "video", "--reps", "2", "--video-frames", "96"], 60),
    ("sam3-1008-bf16", ["--only", "sam3", "--sam3-size", "1008", "--sam3-precision", "bf16", "--sam3-classes",
                        "1,10,80", "--sam3-reference-max", "80", "--sam3-reps", "2"], 150),
]


def environment() -> dict:
    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
    return env


def run_tests(timeout: float) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rs", str(ROOT / "tests" / "test_cuda.py")]
    print("$", " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, cwd=ROOT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"gpu_check: the CUDA tests ran past {timeout:.0f} s", flush=True)
        return 1


def run_bench(name: str, extra: list[str], timeout: float, work: Path) -> dict:
    out = work / f"{name}.json"
    cmd = [sys.executable, str(ROOT / "tools" / "bench.py"), "--device", "cuda", "--json", str(out), *extra]
    print("$", " ".join(cmd), flush=True)
    start = time.monotonic()
    try:
        code = subprocess.run(cmd, cwd=ROOT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return {"error": f"ran past {timeout:.0f} s"}
    if code != 0 or not out.is_file():
        return {"error": f"exit status {code}"}
    result = json.loads(out.read_text())
    result["wall_seconds"] = round(time.monotonic() - start, 1)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-bench", action="store_true", help="run the CUDA tests only")
    parser.add_argument("--skip-tests", action="store_true", help="run the benchmarks only")
    parser.add_argument("--test-timeout", type=float, default=150.0, help="seconds for the CUDA tests")
    parser.add_argument("--out", type=Path, help="write the environment, test status and figures as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = environment()
    print("gpu_check:", json.dumps(env), flush=True)
    if not env["cuda_available"]:
        print("gpu_check: torch sees no CUDA device; nothing to check here", file=sys.stderr)
        return 2
    report: dict = {"environment": env}
    start = time.monotonic()
    if not args.skip_tests:
        code = run_tests(args.test_timeout)
        report["tests"] = "passed" if code == 0 else f"failed ({code})"
        if code != 0:
            print("gpu_check: CUDA tests failed; benchmarks not run", file=sys.stderr)
            if args.out:
                args.out.write_text(json.dumps(report, indent=2))
            return 1
    if not args.skip_bench:
        with tempfile.TemporaryDirectory() as tmp:
            for name, extra, timeout in BENCHES:
                report[name] = run_bench(name, extra, timeout, Path(tmp))
    report["wall_seconds"] = round(time.monotonic() - start, 1)
    summary = {k: v for k, v in report.items() if k != "environment"}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
