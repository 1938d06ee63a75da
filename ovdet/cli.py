"""`ovdet` command line: thin subcommands over the library.

Exit codes: 0 success; 1 some inputs were skipped (each reported); 2 user error (one line on
stderr; `--debug` shows the traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, ImageReadError, OvdetError
from .audit import command as audit_command  # light: no torch at import
from .eval import command as eval_command  # light: no torch or pycocotools at import
from .explain import command as explain_command
from .io import write_json_atomic
from .video import command as video_command



class UsageError(OvdetError):
    """Bad command-line usage (argparse's complaints, routed through our one-line errors)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; we want one line
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    common.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for the models (default: the CPUs this process may use, "
                             "container quotas included; or $OMP_NUM_THREADS)")
    return common


def _set_threads(threads: int | None) -> None:
    """--threads N: through OMP_NUM_THREADS, read when torch loads (it loads later, lazily),
    and directly when something already loaded it."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _model_options(p: argparse.ArgumentParser) -> None:
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


def _vocabulary_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--classes", "-c", help='comma-separated class names, e.g. "bus,person"')
    group.add_argument("--classes-from", type=Path,
                       help="vocabulary file: one name per line, or a COCO/LVIS annotation JSON's categories")


def _image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="ovdet", description="Open-vocabulary object detection: type class names, get boxes.",
                     parents=[common])
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    det = sub.add_parser("detect", parents=[common], help="detect named objects in images",
                         description="Detect the named classes in images; prints, draws or writes JSON.")
    _image_options(det)
    _vocabulary_options(det)
    _model_options(det)
    det.add_argument("--boxes", type=Path,
                     help='JSON of boxes to score instead of proposals: {"image path or file name": [[x1, y1, x2, y2], ...]}')
    det.add_argument("--out", type=Path, help="folder for annotated images")
    det.add_argument("--json", dest="json_path", help="write results as JSON to this file ('-' = stdout)")

    clf = sub.add_parser("classify", parents=[common], help="zero-shot classify whole images with CLIP",
                         description="Probability of each class name for each image (softmax over the classes).")
    _image_options(clf)
    _vocabulary_options(clf)
    clf.add_argument("--model", "-m", default="clip-b32", help="CLIP preset, checkpoint folder or hub id (default: clip-b32)")
    clf.add_argument("--templates", help="prompt templates (set name, one template with {}, or a file)")
    clf.add_argument("--top-k", type=int, default=5, help="classes printed per image (default 5)")
    clf.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    clf.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], help="numeric precision of the towers")
    clf.add_argument("--batch-size", type=int, help="images per forward pass")
    clf.add_argument("--json", dest="json_path", help="write probabilities as JSON to this file ('-' = stdout)")

    wts = sub.add_parser("weights", parents=[common], help="list or download checkpoints",
                         description="Show presets and which checkpoints are on disk, or download one.")
    wsub = wts.add_subparsers(dest="weights_command", parser_class=_Parser, metavar="ACTION")
    wsub.add_parser("list", parents=[common], help="presets and where their checkpoints are")
    dl = wsub.add_parser("download", parents=[common], help="store a preset's checkpoint under weights/")
    dl.add_argument("preset", help="preset name (see `ovdet weights list`)")
    dl.add_argument("--to", type=Path, help="destination folder (default: ./weights/PRESET)")
    eval_command.add_parser(sub, common)
    video_command.add_parser(sub, common)
    explain_command.add_parser(sub, common)
    audit_command.add_parser(sub, common)
    return parser


# -- shared helpers ---------------------------------------------------------------------------
def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from the flags a subcommand has (unset flags keep the preset's value)."""
    keys = {
        "threshold": "threshold", "nms_iou": "nms_iou", "class_agnostic_nms": "class_agnostic_nms",
        "max_det": "max_detections", "multi_label": "multi_label", "templates": "templates", "negatives": "negatives",
        "class_thresholds": "class_thresholds", "precision": "precision", "batch_size": "batch_size", "compile": "compile",
    }
    return {cfg_key: getattr(args, flag) for flag, cfg_key in keys.items() if hasattr(args, flag)}


def _vocabulary(args: argparse.Namespace) -> tuple[str, ...]:
    from .text import load_vocabulary, validate_vocabulary

    if args.classes_from is not None:
        return validate_vocabulary(load_vocabulary(args.classes_from))
    return validate_vocabulary(args.classes)


def _write_json(path: str, payload: Any) -> None:
    """JSON to a file, atomically (never a truncated file), or to stdout for '-'."""
    if path == "-":
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_json_atomic(path, payload, indent=2)


def _output_name(path: str, used: set[str]) -> str:
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

        from .io import expand_image_args

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
        from .io import load_image

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


def _load_boxes(path: Path, image_paths: Sequence[str]) -> list[Any]:
    """--boxes JSON: {"image path or file name": [[x1, y1, x2, y2], ...]} -> one list per image."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OvdetError(f"cannot read boxes file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise OvdetError(f"boxes file {path} must map image paths (or file names) to lists of [x1, y1, x2, y2]")
    out = []
    for image in image_paths:
        boxes = data.get(image, data.get(Path(image).name))
        if boxes is None:
            raise OvdetError(f"boxes file {path} has no entry for {image} (keys are image paths or file names)")
        out.append(boxes)
    return out


# -- detect -----------------------------------------------------------------------------------
def cmd_detect(args: argparse.Namespace) -> int:
    names = _vocabulary(args)  # fail before importing torch or loading a model
    from .adapters import to_records
    from .detector import Detector, resolve_config

    cfg = resolve_config(args.model, device=args.device, **_overrides(args))
    batches = ImageBatches(args.images, cfg.batch_size)
    boxes = dict(zip(batches.paths, _load_boxes(args.boxes, batches.paths))) if args.boxes else None
    detector = None  # loaded once the first image has been read: bad images fail fast
    results: list[dict] = []
    used_names: set[str] = set()
    try:
        for paths, arrays in batches:
            if detector is None:
                detector = Detector.from_config(cfg)
            given = [boxes[p] for p in paths] if boxes is not None else None
            for path, image, dets in zip(paths, arrays, detector.detect_batch(arrays, names, boxes=given)):
                h, w = dets.image_size
                results.append({"image": path, "width": w, "height": h, "detections": to_records(dets)})
                if args.out is not None:
                    from .draw import annotate, save_image

                    save_image(annotate(image, dets), args.out / _output_name(path, used_names))
                if args.json_path is None:
                    _print_detections(path, dets, batches.bar)
    except KeyboardInterrupt:
        # keep what was finished: the JSON of the images done so far, then exit 130
        if args.json_path is not None and results:
            _write_json(args.json_path, results)
            print(f"ovdet: interrupted; {len(results)} finished image(s) written to {args.json_path}", file=sys.stderr)
        raise
    if args.json_path is not None:
        _write_json(args.json_path, results)
    if args.json_path != "-" and (args.out is not None or args.json_path is not None):
        where = [str(x) for x in (args.out, args.json_path) if x is not None]
        print(f"ovdet: {len(results)} image(s) processed, results in {', '.join(where)}", file=sys.stderr)
    return batches.exit_code(len(results))


def _print_detections(path: str, dets, bar) -> None:
    lines = [f"{path}: {len(dets)} detection(s)"]
    for (x1, y1, x2, y2), score, label in zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.labels):
        lines.append(f"  {label:<20} {score:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    bar.write("\n".join(lines), file=sys.stdout)


# -- classify ---------------------------------------------------------------------------------
def cmd_classify(args: argparse.Namespace) -> int:
    names = _vocabulary(args)
    from .classify import Classifier
    from .detector import resolve_config

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    cfg = resolve_config(args.model, device=args.device, **_overrides(args))
    batches = ImageBatches(args.images, cfg.batch_size)
    classifier = None
    results: list[dict] = []
    for paths, arrays in batches:
        if classifier is None:
            classifier = Classifier.from_config(cfg)
        for path, res in zip(paths, classifier.classify_batch(arrays, names)):
            top = res.top(args.top_k)
            results.append({"image": path, "probabilities": res.as_dict(), "top": [{"class_name": n, "probability": round(p, 5)} for n, p in top]})
            if args.json_path is None:
                batches.bar.write(f"{path}: " + ", ".join(f"{n} {p:.3f}" for n, p in top), file=sys.stdout)
    if args.json_path is not None:
        _write_json(args.json_path, results)
    return batches.exit_code(len(results))


# -- weights ----------------------------------------------------------------------------------
def cmd_weights(args: argparse.Namespace) -> int:
    from .config import load_config, preset_names
    from .errors import ConfigError, WeightsNotFoundError
    from . import weights as wmod

    if args.weights_command in (None, "list"):
        rows = [("PRESET", "CHECKPOINT", "ON DISK", "DESCRIPTION")]
        for name in preset_names():
            cfg = load_config(name)
            found, missing = [], []
            # every checkpoint the preset needs: main weights, proposer, separate text tower
            for part, weights in (("", cfg.weights), ("proposer ", cfg.proposer_weights), ("text ", cfg.text_weights)):
                if not weights:
                    continue
                try:
                    if weights.endswith(".pt"):  # an ultralytics file, not a transformers folder
                        from .backends.yolo import find_yolo_weights

                        found.append(f"{part}{find_yolo_weights(weights, preset=cfg.name if not part else '')}")
                    else:
                        located = wmod.locate(cfg.name if not part else "", weights, download=False)
                        found.append(f"{part}{located.source}: {located.path}")
                except WeightsNotFoundError:
                    missing.append(f"{part}{weights}".strip())
            where = f"no: {', '.join(missing)} (ovdet weights download {name})" if missing else "; ".join(found)
            rows.append((name, cfg.weights, where, cfg.description))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
        env = os.environ.get("OVDET_WEIGHTS")
        print(f"\nsearched: {', '.join(str(d) for d in wmod.weights_dirs())}, "
              f"$OVDET_WEIGHTS={env or '(unset)'}, the Hugging Face cache")
        return EXIT_OK
    if args.preset not in preset_names():
        raise ConfigError(f"unknown preset {args.preset!r} (presets: {', '.join(preset_names())})")
    cfg = load_config(args.preset)
    if wmod.offline():
        raise WeightsNotFoundError(f"cannot download {cfg.weights}: HF_HUB_OFFLINE=1 is set; unset it on a machine with internet")
    root = args.to.parent if args.to else wmod.weights_dirs()[0]
    for source, path in wmod.download_preset(cfg, root, main_dir=args.to):
        print(f"stored {source} in {path}")
    print(f"copy {root}/ to weights/ beside ovdet (or point $OVDET_WEIGHTS at it) on the offline machine")
    return EXIT_OK


# -- entry point ------------------------------------------------------------------------------
COMMANDS = {"detect": cmd_detect, "classify": cmd_classify, "weights": cmd_weights, "eval": eval_command.run,
            "video": video_command.run, "explain": explain_command.run, "audit": audit_command.run}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        _set_threads(getattr(args, "threads", None))
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("ovdet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OvdetError, OSError) as exc:
        # user errors (and file-system errors such as a full disk): one line, unless --debug
        if debug:
            traceback.print_exc()
        message = str(exc).replace("\n", " ")
        print(message if message.startswith("ovdet") else f"ovdet: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
