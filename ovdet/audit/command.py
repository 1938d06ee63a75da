"""`ovdet audit`: zero-shot classify a folder and compare the predictions across groups.

Listed in `ovdet.cli.app` through `add_parser` / `run`. Writes predictions.csv,
summary.csv and chart.png to --out (default: a new run folder runs/audit/exp<N>) and prints the per-group table with a chi-square test.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..defaults import DEFAULT_CLASSIFIER


def add_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..kit.runs import add_run_options
    from ..kit.options import add_progress_option, add_vocabulary_options

    p = subparsers.add_parser(
        "audit", parents=[common], help="compare zero-shot predictions across groups of images",
        description="Classify every image with CLIP (prompt templates as in `classify`); per group, the "
                    "distribution of top classes and the mean probabilities, with a chi-square test of "
                    "independence so that small samples are not over-read.")
    p.add_argument("--images", nargs="+", required=True, metavar="IMAGE", help="image folders, files or glob patterns")
    add_vocabulary_options(p)
    p.add_argument("--groups", type=Path,
                   help="CSV with a header and columns image,group; image = path, path relative to the images "
                        "folder, or file name. Every image needs exactly one row")
    p.add_argument("--out", type=Path, help="output folder (default: a new run folder runs/audit/exp<N>)")
    p.add_argument("--model", "-m", default=DEFAULT_CLASSIFIER,
                   help=f"CLIP preset, checkpoint folder or hub id (default: {DEFAULT_CLASSIFIER})")
    p.add_argument("--templates", help="prompt templates (set name, one template with {}, or a file)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], help="numeric precision of the towers")
    p.add_argument("--batch-size", type=int, help="images per forward pass")
    add_progress_option(p)
    add_run_options(p, "audit")
    return p


def run(args: argparse.Namespace) -> int:
    from .groups import read_groups
    from .report import AuditReport
    from .summary import rows_from, summarise
    from ..classify import Classifier
    from ..kit.images import ImageBatches
    from ..kit.options import config_overrides, read_vocabulary
    from ..kit.runs import run_dir_for, saved_to
    from ..detector import resolve_config
    from ..io import expand_image_args

    names = read_vocabulary(args)
    cfg = resolve_config(args.model, device=args.device, **config_overrides(args))
    groups = None
    if args.groups is not None:
        # checked before any image is read or a progress bar drawn: a mismatch is one line
        paths = list(expand_image_args(args.images))
        root = args.images[0] if len(args.images) == 1 and os.path.isdir(args.images[0]) else None
        if paths:
            groups = read_groups(args.groups, paths, root)
    batches = ImageBatches(args.images, cfg.batch_size, desc="audit")
    classifier = None
    rows = []
    for paths, arrays in batches:
        if classifier is None:
            classifier = Classifier.from_config(cfg)
        rows += rows_from(classifier.classify_batch(arrays, names), paths, groups)
    if not rows:
        return batches.exit_code(0)
    report = AuditReport(tuple(rows), summarise(rows, names), tuple(batches.failed))
    out = args.out if args.out is not None else run_dir_for(args)
    files = report.write(out)
    print(report.summary.table())
    warning = report.summary.chi2.warning()
    if warning:
        print(f"ovdet: warning: {warning}", file=sys.stderr)
    print(f"ovdet: {len(rows)} image(s) audited ({', '.join(p.name for p in files.values())})", file=sys.stderr)
    print(saved_to(out), file=sys.stderr)
    return batches.exit_code(len(rows))
