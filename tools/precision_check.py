#!/usr/bin/env python
"""How far a reduced-precision mode moves an OWL model's boxes and scores from fp32.

Runs the same image through the model twice (fp32, the reference, and --precision) and
compares every candidate box (one per patch token, before thresholds and NMS):

    python tools/precision_check.py weights/owlv2-b16 examples/chelsea.jpg --classes "cat,remote control"
    python tools/precision_check.py /tmp/tiny/owlv2 examples/astronaut.jpg   # tools/make_tiny_models.py

Prints the median / 99th percentile / max box-corner difference in pixels, the largest score
difference, and the smallest IoU among the --top best-scoring boxes. Run it on real weights
before trusting a new fast path: random weights give saturated boxes that say little.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="OWL preset, checkpoint folder or hub id")
    parser.add_argument("image")
    parser.add_argument("--classes", default="cat,dog,person,remote control,a red bus")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--top", type=int, default=50, help="best-scoring boxes whose IoU is reported")
    args = parser.parse_args(argv)

    import torch
    from torchvision.ops import box_iou

    from ovdet import Detector
    from ovdet.io import load_image

    image = load_image(args.image)
    classes = [c.strip() for c in args.classes.split(",")]

    def candidates(precision: str):
        det = Detector.from_pretrained(args.model, device=args.device, precision=precision, cache_text=False)
        region = det.backend.predict([image], det.class_embeddings(tuple(classes)))[0]
        return region.boxes.float().cpu(), region.scores.float().cpu()

    ref_boxes, ref_scores = candidates("fp32")
    boxes, scores = candidates(args.precision)
    diff = (boxes - ref_boxes).abs()
    top = ref_scores.max(1).values.argsort(descending=True)[: args.top]
    iou = box_iou(boxes[top], ref_boxes[top]).diagonal()
    print(f"{args.precision} vs fp32 over {len(ref_boxes)} candidate boxes, {len(classes)} classes:")
    print(f"  box corners (px): median {diff.median():.3f}  p99 {diff.flatten().quantile(0.99):.3f}  "
          f"max {diff.max():.3f}")
    print(f"  scores: max |difference| {(scores - ref_scores).abs().max():.4f}")
    print(f"  top {len(top)} boxes: min IoU {iou.nan_to_num(1.0).min():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
