"""`ovdet detect`: named objects in images -> printed list, annotated images, JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ..files import read_json, write_json
from ..errors import Interrupted, OvdetError
from ..kit.images import ImageBatches, LazyDetector, output_name
from ..kit.options import (add_image_options, add_mask_format_option, add_model_options, add_progress_option,
                           add_vocabulary_options, config_overrides, read_vocabulary)
from ..kit.runs import add_run_options, run_dir_for, saved_to


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    det = sub.add_parser("detect", parents=[common], help="detect named objects in images",
                         description="Detect the named classes in images; prints, draws or writes JSON.")
    add_image_options(det)
    add_vocabulary_options(det)
    add_model_options(det)
    det.add_argument("--boxes", type=Path,
                     help='JSON of boxes to score instead of proposals: {"image path or file name": [[x1, y1, x2, y2], ...]}')
    det.add_argument("--out", type=Path, help="folder for annotated images (instead of the run folder)")
    det.add_argument("--json", dest="json_path", help="write results as JSON to this file ('-' = stdout) "
                     "(instead of the run folder)")
    det.add_argument("--no-save", action="store_true", help="only print the detections; write no files")
    add_mask_format_option(det)
    add_progress_option(det)
    add_run_options(det, "detect")
    return det


def load_boxes(path: Path, image_paths: Sequence[str]) -> list[Any]:
    """--boxes JSON: {"image path or file name": [[x1, y1, x2, y2], ...]} -> one list per image."""
    data = read_json(path, "boxes file (a mapping of image paths or file names to [[x1, y1, x2, y2], ...])", expect=dict)
    out = []
    for image in image_paths:
        boxes = data.get(image, data.get(Path(image).name))
        if boxes is None:
            raise OvdetError(f"boxes file {path} has no entry for {image} (keys are image paths or file names)")
        out.append(boxes)
    return out


def run(args: argparse.Namespace) -> int:
    """Without --out, --json or --no-save the annotated images and results.json go to a new run
    folder runs/detect/exp<N>; with either flag, exactly where it says."""
    names = read_vocabulary(args)  # fail before importing torch or loading a model
    from ..detector import resolve_config
    from ..records import image_record

    cfg = resolve_config(args.model, device=args.device, **config_overrides(args))
    # the model loads once the first image's header has been read: bad images fail fast
    lazy = LazyDetector(cfg)
    batches = ImageBatches(args.images, cfg.batch_size, loader=lazy.load, desc="detect")
    boxes = dict(zip(batches.paths, load_boxes(args.boxes, batches.paths))) if args.boxes else None
    explicit = args.out is not None or args.json_path is not None
    save_dir = args.out
    json_path = args.json_path
    results: list[dict] = []
    used_names: set[str] = set()
    try:
        for paths, images in batches:
            if save_dir is None and not explicit and not args.no_save:  # made once the first image is read
                save_dir = run_dir_for(args)
                json_path = str(save_dir / "results.json")
            given = [boxes[p] for p in paths] if boxes is not None else None
            for path, image, dets in zip(paths, images, lazy.get().detect_batch(images, names, boxes=given)):
                results.append(image_record(path, dets, args.mask_format))
                if save_dir is not None:
                    from ..draw import save_annotated
                    from ..io import load_image

                    # drawn at full size: a JPEG decoded reduced for the model is read again;
                    # in place: the pixels are not needed after this (a huge image is not copied)
                    full = load_image(path, cfg.max_pixels) if image.reduced else image.array
                    save_annotated(full, dets, save_dir / output_name(path, used_names), in_place=True)
                if args.json_path is None:
                    _print_detections(path, dets, batches.bar)
    except KeyboardInterrupt:
        batches.bar.close()  # the note goes on its own line, not into the bar
        # keep what was finished: the JSON of the images done so far, then exit 130
        if json_path is not None and results:
            write_json(json_path, results)
            raise Interrupted(f"interrupted; {len(results)} finished image(s) written to {json_path}") from None
        raise
    if json_path is not None:
        write_json(json_path, results)
    if not explicit and save_dir is not None:
        print(f"ovdet: {len(results)} image(s) processed", file=sys.stderr)
        print(saved_to(save_dir), file=sys.stderr)
    elif args.json_path != "-" and explicit:
        where = [str(x) for x in (args.out, args.json_path) if x is not None]
        print(f"ovdet: {len(results)} image(s) processed, results in {', '.join(where)}", file=sys.stderr)
    return batches.exit_code(len(results))


def _print_detections(path: str, dets, bar) -> None:
    lines = [f"{path}: {len(dets)} detection(s)"]
    for (x1, y1, x2, y2), score, label in zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.labels):
        lines.append(f"  {label:<20} {score:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    bar.write("\n".join(lines), file=sys.stdout)
