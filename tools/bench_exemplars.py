#!/usr/bin/env python
"""What an image exemplar costs, on full-size OWL-ViT B/32 (random weights, as tools/bench.py).

    python tools/bench_exemplars.py [--reps 5] [--precision bf16] [--device cpu] [--json out.json]

Timed in one process, interleaved, medians (seconds per call, one 640x480 target):
  text        detect(target, ["cat", "remote control"])
  mixed       detect(target, ["cat", Example("thing", exemplar, box)]), exemplar cached in memory
  cold        the same with the exemplar's embedding computed afresh (memory and disk cleared):
              one extra image-tower pass for the exemplar
  disk        the same with the embedding read from the on-disk cache (new process memory)
  reference   transformers' image_guided_detection (fp32 only: it runs the query image through
              the tower on every call), with its processor
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import interleaved, save_owl, test_image  # noqa: E402  (tools/bench.py: same helpers)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from PIL import Image
    from transformers import AutoProcessor, OwlViTForObjectDetection

    from ovdet import Detector, Example
    from ovdet.cache import ExemplarEmbeddingCache

    with tempfile.TemporaryDirectory() as work:
        folder = save_owl("owlvit-b32", Path(work) / "owlvit")
        det = Detector.from_pretrained(str(folder), precision=args.precision, device=args.device, cache_text=False)
        cache = ExemplarEmbeddingCache(Path(work) / "cache")
        det.exemplars.cache = cache
        target = test_image()
        exemplar = test_image(300, 300)
        box = (40.0, 30.0, 220.0, 260.0)
        ex = Example("thing", exemplar, box)
        mixed = ["cat", ex]

        def cold():
            det.exemplars.clear_memory()
            for f in cache.directory.glob("*.npy"):
                f.unlink()
            det.detect(target, mixed)

        def disk():
            det.exemplars.clear_memory()
            det.detect(target, mixed)

        runs = {
            "text": lambda: det.detect(target, ["cat", "remote control"]),
            "mixed": lambda: det.detect(target, mixed),
            "cold": cold,
            "disk": disk,
        }
        if str(det.backend.dtype) == "torch.float32" and args.device == "cpu":
            processor = AutoProcessor.from_pretrained(str(folder))
            reference = OwlViTForObjectDetection.from_pretrained(str(folder)).eval()
            pil_target, pil_query = Image.fromarray(target), Image.fromarray(exemplar)

            def ref():
                inputs = processor(images=pil_target, query_images=pil_query, return_tensors="pt")
                with torch.no_grad():
                    reference.image_guided_detection(**inputs)

            runs["reference"] = ref
        med = interleaved(runs, args.reps, args.device)
    report = {
        "model": "owlvit-b32 architecture, random weights", "precision": str(det.backend.dtype),
        "device": args.device, "threads": torch.get_num_threads(), "reps": args.reps,
        "seconds": {k: round(v, 4) for k, v in med.items()},
        "mixed_over_text": round(med["mixed"] / med["text"], 3),
        "cold_over_mixed": round(med["cold"] / med["mixed"], 3),
        "disk_over_mixed": round(med["disk"] / med["mixed"], 3),
    }
    if "reference" in med:
        report["reference_over_mixed"] = round(med["reference"] / med["mixed"], 3)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
