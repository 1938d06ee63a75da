"""`ovdet export`: a detector to ONNX graphs that keep the vocabulary open and run without torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..defaults import DEFAULT_DETECTOR
from ..errors import EXIT_OK, EXIT_PARTIAL

CHECK_CLASSES = "person,car,cat,dog,bottle"


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..kit.runs import add_run_options

    p = sub.add_parser("export", parents=[common], help="export a detector to ONNX (open vocabulary, runs without torch)",
                       description="Export a detector to a folder of ONNX graphs (image tower, class head, text tower) "
                                   "with manifest.json and the tokenizer; run it with --model DIR (needs ovdet[onnx]).")
    p.add_argument("--model", "-m", default=DEFAULT_DETECTOR,
                   help=f"preset name, YAML config, checkpoint folder or hub id (default: {DEFAULT_DETECTOR})")
    p.add_argument("--out", "-o", type=Path,
                   help="folder to write (new, empty, or an earlier export; default: a new run folder runs/export/exp<N>)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="precision of the towers inside the graphs; inputs and outputs stay fp32 (default: fp32)")
    p.add_argument("--check", metavar="IMAGE",
                   help="compare the export with the torch model on this image and print the largest differences")
    p.add_argument("--check-classes", default=CHECK_CLASSES,
                   help=f"vocabulary for --check (default: {CHECK_CLASSES})")
    add_run_options(p, "export")
    return p


def run(args: argparse.Namespace) -> int:
    from ..text import validate_vocabulary

    classes = validate_vocabulary(args.check_classes) if args.check else ()
    if args.check and not Path(args.check).is_file():
        from ..errors import ImageReadError

        raise ImageReadError(f"image not found: {args.check}")  # before minutes of exporting
    from .exporter import export_detector

    if args.out is None:
        from ..kit.runs import run_dir_for

        args.out = run_dir_for(args)  # an empty new folder: the exporter writes into it
    manifest = export_detector(args.model, args.out, opset=args.opset, precision=args.precision,
                               say=lambda msg: print(f"ovdet: {msg}", file=sys.stderr))
    graphs = ", ".join(g["file"] for g in manifest["graphs"].values())
    print(f"{args.out}: {graphs}, tokenizer/, manifest.json ({manifest['precision']}, opset {manifest['opset']})")
    if not args.check:
        return EXIT_OK
    from .check import BOX_TOLERANCE_PX, SCORE_TOLERANCE, check_export

    diffs, ok = check_export(args.model, args.out, args.check, classes)
    print(f"check on {args.check} ({len(classes)} classes), export vs torch fp32, largest |difference|:")
    for key, value in diffs.items():
        print(f"  {key:<20} {value:.3g}" if "detections" not in key else f"  {key:<20} {int(value)}")
    if args.precision == "fp32" and not ok:
        print(f"ovdet: export differs from torch beyond {SCORE_TOLERANCE:g} score / {BOX_TOLERANCE_PX:g} px",
              file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK
