"""Shared option groups, each added with its arguments (no patching of argparse afterwards),
and what they turn into: config overrides, the vocabulary, the exemplars."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_DETECTOR
from .parser import UsageError

PRESET_DEFAULT = "the preset's"


def add_model_options(p: argparse.ArgumentParser, default_model: str | None = DEFAULT_DETECTOR, *,
                      model_help: str | None = None, threshold_help: str | None = None,
                      max_det_help: str | None = None) -> tuple[str, ...]:
    """The detector flags of `ovdet detect`; every command that runs a detector takes them.

    `default_model`: the --model default (None: "not given", for commands where a model is
    optional; `model_help` then says what happens). `threshold_help` / `max_det_help`: a
    command's own defaults for --threshold / --max-det, in words. Returns the dests added."""
    dests: list[str] = []

    def add(group, *flags, **kwargs):
        dests.append(group.add_argument(*flags, **kwargs).dest)

    shown = default_model or DEFAULT_DETECTOR
    add(p, "--model", "-m", default=default_model,
        help=model_help or f"preset name, YAML config, checkpoint folder or hub id (default: {shown})")
    add(p, "--threshold", "-t", type=float, help=threshold_help or f"score cut in [0, 1] (default: {PRESET_DEFAULT})")
    add(p, "--nms-iou", type=float, help=f"NMS IoU; 1 disables NMS (default: {PRESET_DEFAULT})")
    add(p, "--class-agnostic-nms", action="store_true", default=None, help="suppress overlapping boxes across classes too")
    add(p, "--max-det", type=int, help=max_det_help or "most detections per image")
    add(p, "--multi-label", action="store_true", default=None,
        help="report a box for every class scoring above the threshold, not just its best")
    add(p, "--templates", help='prompt templates: a set (single, photo, none), one template with {} '
        '("a photo of a {}") or a file with one per line')
    add(p, "--negatives", help='comma-separated prompts that must not be reported, e.g. "toy dog,statue"')
    add(p, "--class-thresholds", help="YAML file {class name: threshold}")
    add(p, "--calibration", metavar="FILE",
        help="calibration YAML from `ovdet calibrate`: calibrated scores and per-class thresholds")
    add(p, "--no-calibration-thresholds", dest="calibration_thresholds", action="store_false", default=None,
        help="with --calibration: keep its scores but cut them with --threshold, not its thresholds")
    add(p, "--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    add(p, "--precision", choices=["fp32", "bf16", "fp16", "auto"], help="numeric precision of the towers")
    add(p, "--batch-size", type=int, help="images per forward pass")
    add(p, "--compile", action="store_true", default=None,
        help="torch.compile the image tower (slow first call; for long GPU runs: on a CPU the default fused bf16 "
             "tower is faster)")
    tiles = p.add_argument_group("sliced inference (small objects in large images) and image limits")
    add(tiles, "--tile", type=int, metavar="PX", help="cut images into PX x PX tiles, batch_size per forward pass (0 = off)")
    add(tiles, "--tile-overlap", type=float, metavar="F", help="fraction of a tile neighbours share (default 0.2)")
    add(tiles, "--tile-full-image", action="store_true", default=None,
        help="also run the whole image and merge it with the tiles (large objects)")
    add(tiles, "--tile-merge", choices=["nms", "nmm"], help="merge across tiles: keep the best (nms) or grow it "
        "to the union of what it absorbs (nmm, default)")
    add(tiles, "--tile-merge-iou", type=float, metavar="X", help="overlap above which tiles' boxes are one object (0.5)")
    add(tiles, "--tile-merge-metric", choices=["iou", "ios"],
        help="overlap as intersection over union, or over the smaller box (ios, default)")
    add(tiles, "--max-pixels", type=int, metavar="N", help="refuse larger images (default 500,000,000)")
    add(tiles, "--reduced-decode", action="store_true", default=None,
        help="decode JPEGs (files, URLs, uploads) at the smallest 1/2, 1/4, 1/8 scale that keeps twice "
             "the model's input: faster on large photos, inputs a few levels off the exact decode")
    add(p, "--masks", metavar="MODEL", help="also segment every detection with a SAM 2 / SAM checkpoint "
        "(preset name, folder or hub id)")
    dests += add_example_options(p)
    return tuple(dests)


def add_mask_format_option(p: argparse.ArgumentParser) -> str:
    """--mask-format, for commands that write JSON records (masks come from --masks)."""
    return p.add_argument("--mask-format", choices=["rle", "polygon"], default="rle",
                          help='masks in the JSON: "mask" as COCO RLE (rle, default), or that and "polygons" too '
                               '(polygon)').dest


def add_example_options(p: argparse.ArgumentParser) -> list[str]:
    """Image exemplars (classes shown by example), part of every detector command's flags."""
    return [
        p.add_argument("--example", action="append", metavar="NAME=PATH[:x1,y1,x2,y2]",
                       help="an image exemplar of class NAME (repeatable; box in that image's pixels, default the "
                            "whole image); with --classes it adds or blends with a named class").dest,
        p.add_argument("--examples", type=Path, metavar="FILE.yaml",
                       help="exemplars from YAML: NAME: [{image: PATH, box: [x1, y1, x2, y2]}, ...]").dest,
        p.add_argument("--example-weight", type=float, metavar="W",
                       help="weight in [0, 1] of a class's exemplars against its text prompt of the same name "
                            "(default: the preset's, 0.5)").dest,
    ]


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--engine local|ray and the Ray actors' resources (`ovdet label`, `ovdet index`)."""
    ray = p.add_argument_group("engine")
    ray.add_argument("--engine", choices=["local", "ray"], default="local", help="local (this process) or ray (Ray Data)")
    ray.add_argument("--workers", type=int, default=1, help="Ray actors, each with its own detector (default 1)")
    ray.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs per Ray actor (default 0)")
    ray.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                     help="CPUs per Ray actor, also its torch threads on CPU (default 1)")
    ray.add_argument("--ray-address", metavar="ADDR",
                     help="join a Ray cluster: auto, ray://head:10001 (default: $RAY_ADDRESS, else a local Ray)")


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """--no-progress: the one flag that hides progress bars (they also hide when stderr is not
    a terminal); the CLI switches `ovdet.progress` off with it."""
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none is drawn when stderr is not a terminal)")


def add_vocabulary_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--classes or --classes-from (one of them; `read_vocabulary` requires one unless the
    command also has exemplar flags and they are given)."""
    p.set_defaults(vocabulary_required=required)  # a value of its own, not a changed flag default
    group = p.add_mutually_exclusive_group()
    group.add_argument("--classes", "-c", help='comma-separated class names, e.g. "bus,person"')
    group.add_argument("--classes-from", type=Path,
                       help="vocabulary file: one name per line, or a COCO/LVIS annotation JSON's categories")


def add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (searched recursively), glob patterns or http(s) URLs")


# flag dest -> DetectorConfig key, for every model flag a subcommand may have
CONFIG_FLAGS = {
    "threshold": "threshold", "nms_iou": "nms_iou", "class_agnostic_nms": "class_agnostic_nms",
    "max_det": "max_detections", "multi_label": "multi_label", "templates": "templates", "negatives": "negatives",
    "class_thresholds": "class_thresholds", "precision": "precision", "batch_size": "batch_size", "compile": "compile",
    **{key: key for key in ("tile", "tile_overlap", "tile_full_image", "tile_merge", "tile_merge_iou",
                            "tile_merge_metric", "max_pixels", "reduced_decode", "calibration", "calibration_thresholds",
                            "example_weight", "masks")},
}


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from the flags a subcommand has (unset flags keep the preset's value)."""
    return {cfg_key: getattr(args, flag) for flag, cfg_key in CONFIG_FLAGS.items() if hasattr(args, flag)}


def read_examples(args: argparse.Namespace) -> list:
    """The `ovdet.Example`s of --example and --examples (none when the command lacks them)."""
    from ..exemplars import load_examples_file, parse_example

    examples = [parse_example(text) for text in getattr(args, "example", None) or ()]
    if getattr(args, "examples", None) is not None:
        examples += load_examples_file(args.examples)
    return examples


def read_vocabulary(args: argparse.Namespace) -> tuple:
    """The validated vocabulary of --classes or --classes-from, then the exemplars of
    --example / --examples (`ovdet.Example`s; on commands that have those flags): what
    `Detector.detect_batch` takes. Exemplar images are read and their boxes checked here, so
    a bad exemplar fails before a model loads."""
    from ..text import load_vocabulary, validate_vocabulary

    examples = read_examples(args)
    classes, classes_from = getattr(args, "classes", None), getattr(args, "classes_from", None)
    if classes_from is not None:
        names = validate_vocabulary(load_vocabulary(classes_from))
    elif classes is not None:
        names = validate_vocabulary(classes)
    elif examples or not getattr(args, "vocabulary_required", True):
        names = ()
    else:
        flags = "--classes or --classes-from" + (" (or exemplars: --example, --examples)" if hasattr(args, "example") else "")
        raise UsageError(f"ovdet {getattr(args, 'command', None) or ''}: classes are required: give them with {flags}")
    if not examples:
        return names
    from ..exemplars import check_examples, resolve_vocabulary

    entries = (*names, *examples)
    resolve_vocabulary(entries)  # the usual name checks
    check_examples(examples)
    return entries
