"""Options and helpers every `ovdet` subcommand shares (public: feature packages import them).

This module imports no subcommand, so eval/, video/, explain/, audit/ (and later ones) may
import it without a circle; `ovdet.cli.app` assembles the subcommands. Commands that write
files take their run folder from here: `add_run_options(parser, task)` (--project, --name,
--exist-ok), `run_dir_for(args)` / `run_dir(task, ...)` (runs/<task>/exp, exp2, ...; created),
`run_dirs(...)` (the existing ones) and `saved_to(folder)` (the closing line).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, ImageReadError, OvdetError


class UsageError(OvdetError):
    """Bad command-line usage (argparse's complaints, routed through our one-line errors)."""

    def __init__(self, message: str, prog: str = ""):
        super().__init__(message)
        self.prog = prog  # the parser that raised it (a subcommand's errors pass through ovdet's)


class Parser(argparse.ArgumentParser):
    """argparse parser whose errors are one-line `UsageError`s instead of usage + exit, and
    which names a mistyped flag (`--clases`) before complaining about the flags it lacks."""

    def error(self, message: str):  # argparse prints usage + message; we want one line
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)", prog=self.prog)

    def parse_known_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        try:
            namespace, extras = super().parse_known_args(argv, namespace)
        except UsageError as exc:
            # argparse checks required options before it reports unknown ones, so `--clases x`
            # would read "--classes is required": an unknown flag is the likelier story
            if exc.prog == self.prog:
                self._refuse_unknown(argv)
            raise
        self._refuse_unknown(extras)
        return namespace, extras

    def _refuse_unknown(self, tokens: Sequence[str]) -> None:
        """Raise a UsageError naming the first token that looks like a flag this parser lacks."""
        flags = sorted(self._option_string_actions)  # argparse's own table of this parser's flags
        for token in tokens:
            if token == "--":
                return  # what follows is positional
            name = token.split("=", 1)[0]
            if not name.startswith("-") or name == "-" or _NUMBER.match(name):
                continue
            if name in flags or (self.allow_abbrev and any(f.startswith(name) for f in flags if f.startswith("--"))):
                continue
            close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"{self.prog}: unknown option {name}{hint} (see {self.prog} --help)", prog=self.prog)


_NUMBER = re.compile(r"^-\d|^-\.\d")  # negative numbers are values, not flags


def whole_number(minimum: int):
    """An argparse `type`: a whole number no smaller than `minimum` (flags such as --limit,
    --every, --queue); argparse turns the error into its usual one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


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
    p.add_argument("--calibration", metavar="FILE",
                   help="calibration YAML from `ovdet calibrate`: calibrated scores and per-class thresholds")
    p.add_argument("--no-calibration-thresholds", dest="calibration_thresholds", action="store_false", default=None,
                   help="with --calibration: keep its scores but cut them with --threshold, not its thresholds")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], help="numeric precision of the towers")
    p.add_argument("--batch-size", type=int, help="images per forward pass")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the image tower (slow first call; for long GPU runs: on a CPU the default fused bf16 tower is faster)")
    tiles = p.add_argument_group("sliced inference (small objects in large images) and image limits")
    tiles.add_argument("--tile", type=int, metavar="PX", help="cut images into PX x PX tiles, batch_size per forward pass (0 = off)")
    tiles.add_argument("--tile-overlap", type=float, metavar="F", help="fraction of a tile neighbours share (default 0.2)")
    tiles.add_argument("--tile-full-image", action="store_true", default=None,
                       help="also run the whole image and merge it with the tiles (large objects)")
    tiles.add_argument("--tile-merge", choices=["nms", "nmm"], help="merge across tiles: keep the best (nms) or grow it "
                       "to the union of what it absorbs (nmm, default)")
    tiles.add_argument("--tile-merge-iou", type=float, metavar="X", help="overlap above which tiles' boxes are one object (0.5)")
    tiles.add_argument("--tile-merge-metric", choices=["iou", "ios"],
                       help="overlap as intersection over union, or over the smaller box (ios, default)")
    tiles.add_argument("--max-pixels", type=int, metavar="N", help="refuse larger images (default 500,000,000)")
    tiles.add_argument("--reduced-decode", action="store_true", default=None,
                       help="decode JPEGs (files, URLs, uploads) at the smallest 1/2, 1/4, 1/8 scale that keeps twice "
                            "the model's input: faster on large photos, inputs a few levels off the exact decode")
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
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (searched recursively), glob patterns or http(s) URLs")


# -- where results go ------------------------------------------------------------------------
# One convention for every command that writes files (as ultralytics does): without an explicit
# output flag, results go to a new run folder runs/<task>/<name>, the name taking the first free
# of exp, exp2, exp3..., and the command prints the folder at the end. Explicit flags (--out,
# --json, --results-out...) write exactly where they say instead.
RUNS_ROOT = Path("runs")
DEFAULT_RUN_NAME = "exp"


def add_run_options(p: argparse.ArgumentParser, task: str) -> None:
    """--project, --name, --exist-ok: where the run folder runs/<task>/<name> goes.

    `task` ("detect", "video", "eval"...) is stored as `args.run_task` for `run_dir_for`."""
    group = p.add_argument_group("run folder (used when no explicit output is given)")
    group.add_argument("--project", type=Path, metavar="DIR",
                       help=f"folder holding the run folders (default: {RUNS_ROOT / task})")
    group.add_argument("--name", default=DEFAULT_RUN_NAME,
                       help=f"run folder name; taken names get 2, 3... appended (default: {DEFAULT_RUN_NAME})")
    group.add_argument("--exist-ok", action="store_true", help="write into --name even if it exists")
    p.set_defaults(run_task=task)


def run_dir(task: str, name: str = DEFAULT_RUN_NAME, project: str | Path | None = None,
            exist_ok: bool = False) -> Path:
    """Create and return the run folder `project/name` (default project: runs/<task>).

    Without `exist_ok` the first free of name, name2, name3... is taken; the folder is made
    with exist_ok=False, so two runs started at once never share one."""
    parent = Path(project) if project is not None else RUNS_ROOT / task
    if not name or Path(name).name != name or name in (".", ".."):
        raise UsageError(f"--name must be a plain folder name, got {name!r}")
    if exist_ok:
        (parent / name).mkdir(parents=True, exist_ok=True)
        return parent / name
    parent.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        candidate = parent / (name if k == 1 else f"{name}{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            k += 1


def run_dirs(task: str, name: str = DEFAULT_RUN_NAME, project: str | Path | None = None) -> list[Path]:
    """The existing run folders name, name2, name3... under project (runs/<task>), in order."""
    parent = Path(project) if project is not None else RUNS_ROOT / task
    pattern = re.compile(re.escape(name) + r"(\d*)$")
    found = []
    for child in parent.iterdir() if parent.is_dir() else ():
        match = pattern.match(child.name)
        if child.is_dir() and match and match.group(1) != "1":
            found.append((int(match.group(1) or 1), child))
    return [path for _, path in sorted(found)]


def run_dir_for(args: argparse.Namespace) -> Path:
    """`run_dir` from the flags of `add_run_options`."""
    return run_dir(args.run_task, args.name, args.project, args.exist_ok)


def saved_to(where: Path | str) -> str:
    """The closing line of a command that wrote files (stderr, so stdout stays parseable)."""
    return f"ovdet: results saved to {where}"


# flag dest -> DetectorConfig key, for every model flag a subcommand may have
CONFIG_FLAGS = {
    "threshold": "threshold", "nms_iou": "nms_iou", "class_agnostic_nms": "class_agnostic_nms",
    "max_det": "max_detections", "multi_label": "multi_label", "templates": "templates", "negatives": "negatives",
    "class_thresholds": "class_thresholds", "precision": "precision", "batch_size": "batch_size", "compile": "compile",
    **{key: key for key in ("tile", "tile_overlap", "tile_full_image", "tile_merge", "tile_merge_iou",
                            "tile_merge_metric", "max_pixels", "reduced_decode", "calibration", "calibration_thresholds",
                            "example_weight")},
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


def output_name(path: str, used: set[str]) -> str:
    """Annotated-image file name: the input's name, .jpg/.png kept, made unique in the folder."""
    p = Path(path)
    suffix = p.suffix.lower() if p.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
    name, k = f"{p.stem}{suffix}", 1
    while name in used:
        name, k = f"{p.stem}_{k}{suffix}", k + 1
    used.add(name)
    return name


class LazyDetector:
    """The Detector of a config, built on first use, and the image loader that goes with it.

    `load(path)` reads an image for the detector (max_pixels; with `reduced_decode`, JPEGs
    decoded at the size the model needs); it builds the model only once a file's header has
    been read, so that a missing or unreadable first image still fails before a model loads."""

    def __init__(self, config):
        self.config = config
        self._detector = None

    def get(self):
        if self._detector is None:
            from ..detector import Detector

            self._detector = Detector.from_config(self.config)
        return self._detector

    def load(self, path: str):
        from ..io import read_image

        reduce = self.config.reduced_decode and (lambda h, w: self.get().decode_size(h, w))
        return read_image(path, self.config.max_pixels, reduce or None)


class ImageBatches:
    """Reads the images named on the command line in batches, reporting and skipping the
    unreadable ones; a single image that cannot be read is an error (exit 2)."""

    def __init__(self, image_args: Sequence[str], batch_size: int, loader: Callable[[str], Any] | None = None):
        """`loader(path)` reads one image (default: `ovdet.io.load_image`); it may return an
        array or a `LoadedImage`, and raises `ImageReadError` for images to skip."""
        from tqdm import tqdm

        from ..io import expand_image_args, is_url

        self.paths = list(expand_image_args(image_args))
        if not self.paths:
            raise ImageReadError(f"no images found in {' '.join(image_args)}")
        missing = [p for p in self.paths if not (is_url(p) or os.path.isfile(p))]
        if len(missing) == len(self.paths):
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ImageReadError(f"image not found: {missing[0]}{more}")
        self.batch_size = batch_size
        self.loader = loader
        self.failed: list[str] = []
        self.bar = tqdm(total=len(self.paths), unit="img", disable=len(self.paths) < 2, file=sys.stderr,
                        dynamic_ncols=True)

    def __iter__(self):
        """Yields (paths, images) of the readable images, batch by batch: RGB arrays, or what
        the loader returns."""
        from ..io import load_image

        loader = self.loader or load_image
        for start in range(0, len(self.paths), self.batch_size):
            batch_paths, arrays = [], []
            for path in self.paths[start : start + self.batch_size]:
                try:
                    arrays.append(loader(path))
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
