"""`ovdet detect`: named objects in images -> printed list, annotated images, JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import OvdetError
from .options import (ImageBatches, LazyDetector, add_image_options, add_model_options, add_vocabulary_options, config_overrides,
                      output_name, read_vocabulary, write_json)


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    det = sub.add_parser("detect", parents=[common], help="detect named objects in images",
                         description="Detect the named classes in images; prints, draws or writes JSON.")
    add_image_options(det)
    add_vocabulary_options(det)
    add_model_options(det)
    det.add_argument("--boxes", type=Path,
                     help='JSON of boxes to score instead of proposals: {"image path or file name": [[x1, y1, x2, y2], ...]}')
    det.add_argument("--out", type=Path, help="folder for annotated images")
    det.add_argument("--json", dest="json_path", help="write results as JSON to this file ('-' = stdout)")
    return det


def load_boxes(path: Path, image_paths: Sequence[str]) -> list[Any]:
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


def run(args: argparse.Namespace) -> int:
    names = read_vocabulary(args)  # fail before importing torch or loading a model
    from ..adapters import to_records
    from ..detector import resolve_config

    cfg = resolve_config(args.model, device=args.device, **config_overrides(args))
    # the model loads once the first image's header has been read: bad images fail fast
    lazy = LazyDetector(cfg)
    batches = ImageBatches(args.images, cfg.batch_size, loader=lazy.load)
    boxes = dict(zip(batches.paths, load_boxes(args.boxes, batches.paths))) if args.boxes else None
    results: list[dict] = []
    used_names: set[str] = set()
    try:
        for paths, images in batches:
            given = [boxes[p] for p in paths] if boxes is not None else None
            for path, image, dets in zip(paths, images, lazy.get().detect_batch(images, names, boxes=given)):
                h, w = dets.image_size
                results.append({"image": path, "width": w, "height": h, "detections": to_records(dets)})
                if args.out is not None:
                    from ..draw import annotate, save_image
                    from ..io import load_image

                    # drawn at full size: a JPEG decoded reduced for the model is read again
                    full = load_image(path, cfg.max_pixels) if image.reduced else image.array
                    save_image(annotate(full, dets), args.out / output_name(path, used_names))
                if args.json_path is None:
                    _print_detections(path, dets, batches.bar)
    except KeyboardInterrupt:
        # keep what was finished: the JSON of the images done so far, then exit 130
        if args.json_path is not None and results:
            write_json(args.json_path, results)
            print(f"ovdet: interrupted; {len(results)} finished image(s) written to {args.json_path}", file=sys.stderr)
        raise
    if args.json_path is not None:
        write_json(args.json_path, results)
    if args.json_path != "-" and (args.out is not None or args.json_path is not None):
        where = [str(x) for x in (args.out, args.json_path) if x is not None]
        print(f"ovdet: {len(results)} image(s) processed, results in {', '.join(where)}", file=sys.stderr)
    return batches.exit_code(len(results))


def _print_detections(path: str, dets, bar) -> None:
    lines = [f"{path}: {len(dets)} detection(s)"]
    for (x1, y1, x2, y2), score, label in zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.labels):
        lines.append(f"  {label:<20} {score:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    bar.write("\n".join(lines), file=sys.stdout)
