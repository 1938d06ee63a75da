"""Options and helpers every `ovdet` subcommand shares (public: feature packages import them).

This module imports no subcommand, so eval/, video/, explain/, audit/ (and later ones) may
import it without a circle; `ovdet.cli.app` assembles the subcommands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, ImageReadError, OvdetError
from ..io import write_json_atomic


class UsageError(OvdetError):
    """Bad command-line usage (argparse's complaints, routed through our one-line errors)."""


class Parser(argparse.ArgumentParser):
    """argparse parser whose errors are one-line `UsageError`s instead of usage + exit."""

    def error(self, message: str):  # argparse prints usage + message; we want one line
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def common_options() -> argparse.ArgumentParser:
    """Parent parser of every subcommand: --debug and --threads."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    common.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for the models (default: the CPUs this process may use, "
                             "container quotas included; or $OMP_NUM_THREADS)")
    return common


def set_threads(threads: int | None) -> None:
    """--threads N: through OMP_NUM_THREADS, read when torch loads (it loads later, lazily),
    and directly when something already loaded it."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The detector flags of `ovdet detect`; every command that runs a detector takes them."""
    p.add_argument("--model", "-m", default="owlv2-b16",
                   help="preset name, YAML config, checkpoint folder or hub id (default: owlv2-b16)")
    p.add_argument("--threshold", "-t", type=float, help="score cut in [0, 1] (default: the preset's)")
    p.add_argument("--nms-iou", type=float, help="NMS IoU; 1 disables NMS (default: the preset's)")
    p.add_argument("--class-agnostic-nms", action="store_true", default=None,
                   help="suppress overlapping boxes across classes too")
    p.add_argument("--max-det", type=int, help="most detections per image")
    p.add_argument("--multi-label", action="store_true", default=None,
                   help="report a box for every class scoring above the threshold, not just its best")
    p.add_argument("--templates", help='prompt templates: a set (single, photo, none), one template with {} '
                   '("a photo of a {}") or a file with one per line')
    p.add_argument("--negatives", help='comma-separated prompts that must not be reported, e.g. "toy dog,statue"')
    p.add_argument("--class-thresholds", help="YAML file {class name: threshold}")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], help="numeric precision of the towers")
    p.add_argument("--batch-size", type=int, help="images per forward pass")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the image tower (slow first call; for long GPU runs: on a CPU the default fused bf16 tower is faster)")
    add_example_options(p)


def add_example_options(p: argparse.ArgumentParser) -> None:
    """Image exemplars (classes shown by example), part of every detector command's flags."""
    p.add_argument("--example", action="append", metavar="NAME=PATH[:x1,y1,x2,y2]",
                   help="an image exemplar of class NAME (repeatable; box in that image's pixels, default the "
                        "whole image); with --classes it adds or blends with a named class")
    p.add_argument("--examples", type=Path, metavar="FILE.yaml",
                   help="exemplars from YAML: NAME: [{image: PATH, box: [x1, y1, x2, y2]}, ...]")
    p.add_argument("--example-weight", type=float, metavar="W",
                   help="weight in [0, 1] of a class's exemplars against its text prompt of the same name "
                        "(default: the preset's, 0.5)")


def add_vocabulary_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--classes or --classes-from (one of them; `read_vocabulary` requires one unless the
    command also has exemplar flags and they are given)."""
    p.set_defaults(vocabulary_required=required)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--classes", "-c", help='comma-separated class names, e.g. "bus,person"')
    group.add_argument("--classes-from", type=Path,
                       help="vocabulary file: one name per line, or a COCO/LVIS annotation JSON's categories")


def add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")


# flag dest -> DetectorConfig key, for every model flag a subcommand may have
CONFIG_FLAGS = {
    "threshold": "threshold", "nms_iou": "nms_iou", "class_agnostic_nms": "class_agnostic_nms",
    "max_det": "max_detections", "multi_label": "multi_label", "templates": "templates", "negatives": "negatives",
    "class_thresholds": "class_thresholds", "precision": "precision", "batch_size": "batch_size", "compile": "compile",
    "example_weight": "example_weight",
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
        raise UsageError(f"ovdet {getattr(args, 'command', None) or ''}: give the classes with {flags}")
    if not examples:
        return names
    from ..exemplars import check_examples, resolve_vocabulary

    entries = (*names, *examples)
    resolve_vocabulary(entries)  # the usual name checks
    check_examples(examples)
    return entries


def write_json(path: str, payload: Any) -> None:
    """JSON to a file, atomically (never a truncated file), or to stdout for '-'."""
    if path == "-":
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_json_atomic(path, payload, indent=2)


def output_name(path: str, used: set[str]) -> str:
    """Annotated-image file name: the input's name, .jpg/.png kept, made unique in the folder."""
    p = Path(path)
    suffix = p.suffix.lower() if p.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
    name, k = f"{p.stem}{suffix}", 1
    while name in used:
        name, k = f"{p.stem}_{k}{suffix}", k + 1
    used.add(name)
    return name


class ImageBatches:
    """Reads the images named on the command line in batches, reporting and skipping the
    unreadable ones; a single image that cannot be read is an error (exit 2)."""

    def __init__(self, image_args: Sequence[str], batch_size: int):
        from tqdm import tqdm

        from ..io import expand_image_args

        self.paths = list(expand_image_args(image_args))
        if not self.paths:
            raise ImageReadError(f"no images found in {' '.join(image_args)}")
        missing = [p for p in self.paths if not os.path.isfile(p)]
        if len(missing) == len(self.paths):
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ImageReadError(f"image not found: {missing[0]}{more}")
        self.batch_size = batch_size
        self.failed: list[str] = []
        self.bar = tqdm(total=len(self.paths), unit="img", disable=len(self.paths) < 2, file=sys.stderr,
                        dynamic_ncols=True)

    def __iter__(self):
        """Yields (paths, RGB arrays) of the readable images, batch by batch."""
        from ..io import load_image

        for start in range(0, len(self.paths), self.batch_size):
            batch_paths, arrays = [], []
            for path in self.paths[start : start + self.batch_size]:
                try:
                    arrays.append(load_image(path))
                    batch_paths.append(path)
                except ImageReadError as exc:
                    if len(self.paths) == 1:
                        raise
                    self.failed.append(path)
                    self.bar.write(f"ovdet: skipping {path}: {exc}", file=sys.stderr)
                    self.bar.update(1)
            if arrays:
                yield batch_paths, arrays
                self.bar.update(len(arrays))
        self.bar.close()

    def exit_code(self, processed: int) -> int:
        if self.failed and not processed:
            return EXIT_USAGE
        return EXIT_PARTIAL if self.failed else EXIT_OK
