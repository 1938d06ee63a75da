"""`ovdet classify`: zero-shot whole-image classification with CLIP."""

from __future__ import annotations

import argparse
import sys

from ..defaults import DEFAULT_CLASSIFIER
from ..files import write_json
from ..kit.images import ImageBatches
from ..kit.parser import UsageError
from ..kit.options import add_image_options, add_progress_option, add_vocabulary_options, config_overrides, read_vocabulary


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    clf = sub.add_parser("classify", parents=[common], help="zero-shot classify whole images with CLIP",
                         description="Probability of each class name for each image (softmax over the classes).")
    add_image_options(clf)
    add_vocabulary_options(clf)
    add_progress_option(clf)
    clf.add_argument("--model", "-m", default=DEFAULT_CLASSIFIER,
                     help=f"CLIP preset, checkpoint folder or hub id (default: {DEFAULT_CLASSIFIER})")
    clf.add_argument("--templates", help="prompt templates (set name, one template with {}, or a file)")
    clf.add_argument("--top-k", type=int, default=5, help="classes printed per image (default 5)")
    clf.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    clf.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], help="numeric precision of the towers")
    clf.add_argument("--batch-size", type=int, help="images per forward pass")
    clf.add_argument("--json", dest="json_path", help="write probabilities as JSON to this file ('-' = stdout)")
    return clf


def run(args: argparse.Namespace) -> int:
    names = read_vocabulary(args)
    from ..classify import Classifier
    from ..detector import resolve_config
    from ..records import classification_record

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    cfg = resolve_config(args.model, device=args.device, **config_overrides(args))
    batches = ImageBatches(args.images, cfg.batch_size, desc="classify")
    classifier = None
    results: list[dict] = []
    for paths, arrays in batches:
        if classifier is None:
            classifier = Classifier.from_config(cfg)
        for path, res in zip(paths, classifier.classify_batch(arrays, names)):
            record = classification_record(path, res.as_dict(), args.top_k)
            results.append(record)
            if args.json_path is None:
                best = ", ".join(f"{t['class_name']} {t['probability']:.3f}" for t in record["top"])
                batches.bar.write(f"{path}: {best}", file=sys.stdout)
    if args.json_path is not None:
        write_json(args.json_path, results)
    return batches.exit_code(len(results))
