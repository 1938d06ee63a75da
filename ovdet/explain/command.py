"""`ovdet explain`: relevance heatmaps per class (whole image) and per detection (its box).

Listed in `ovdet.cli.app` through `add_parser` / `run`. Writes, per image, an
overlay PNG and the raw map (.npy, float32 in [0, 1], the image's size) for every class and
every detection, plus index.json listing them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..defaults import DEFAULT_CLASSIFIER
from ..errors import ConfigError, OvdetError
from ..structures import Detections


def add_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..kit.options import add_image_options, add_progress_option, add_vocabulary_options
    from ..kit.runs import add_run_options
    from . import METHODS

    p = subparsers.add_parser(
        "explain", parents=[common], help="heatmaps of where CLIP sees each class (and each detection)",
        description="Relevance maps from a CLIP ViT: Grad-CAM on the patch tokens entering the last block, or gradient-"
                    "weighted attention rollout. One map per class for the whole image, and one per detection "
                    "for its box. Writes overlay PNGs and raw maps (.npy, float32 in [0, 1], the image's size). "
                    "CLIP ResNets are not supported.")
    add_image_options(p)
    add_vocabulary_options(p)
    p.add_argument("--model", "-m", default=DEFAULT_CLASSIFIER,
                   help=f"CLIP ViT preset, checkpoint folder or hub id (default: {DEFAULT_CLASSIFIER}); runs in fp32")
    p.add_argument("--method", choices=METHODS, default="gradcam", help="gradcam (default) or rollout")
    p.add_argument("--templates", help="prompt templates (set name, one template with {}, or a file)")
    p.add_argument("--out", type=Path, help="output folder (default: a new run folder runs/explain/exp<N>)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--detections-from", type=Path,
                        help="JSON written by `ovdet detect --json`: a map per listed detection")
    source.add_argument("--detect-model",
                        help="detect the classes with this model (preset, folder or hub id) and map each detection")
    p.add_argument("--threshold", "-t", type=float, help="score cut for --detect-model (default: its preset's)")
    p.add_argument("--max-det", type=int, help="most detections mapped per image with --detect-model")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    add_progress_option(p)
    add_run_options(p, "explain")
    return p


def _slug(name: str) -> str:
    """A file-name-safe version of a class name ("remote control" -> "remote_control")."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_.") or "class"


def _slugs(names: Sequence[str]) -> list[str]:
    """Slugs of a vocabulary, made unique ("a/b" and "a_b" both slug to "a_b")."""
    slugs = [_slug(n) for n in names]
    return [f"{s}-{i}" if slugs.count(s) > 1 else s for i, s in enumerate(slugs)]


def _unique_stem(path: str, used: set[str]) -> str:
    stem, base, k = Path(path).stem, Path(path).stem, 1
    while stem in used:
        stem, k = f"{base}_{k}", k + 1
    used.add(stem)
    return stem


def _detections_file(path: Path, image_paths: Sequence[str]) -> dict[str, Detections]:
    """`ovdet detect --json` output -> {image path: its `Detections`} for every image (matched by
    path, then file name); an image with no entry is an error."""
    from ..files import read_json
    from ..records import RecordError, detections_from_image_record

    expected = "expected `ovdet detect --json` output: [{\"image\": ..., \"detections\": [...]}]"
    data = read_json(path, "detections file", expect=list)
    if data and isinstance(data[0], dict) and {"image_id", "bbox"} <= set(data[0]):
        # COCO results (what `ovdet eval` writes) name images by id, not path: nothing to match
        raise OvdetError(f"{path} is a COCO results file (from `ovdet eval`?); --detections-from takes "
                         "`ovdet detect --json` output, which names each image")
    by_key: dict[str, Detections] = {}
    for entry in data:
        try:
            dets = detections_from_image_record(entry, source=f"detections file {path}")
        except RecordError as exc:
            raise OvdetError(f"{exc} ({expected})") from None
        if dets is None:  # an image `ovdet detect` could not read
            continue
        b = dets.xyxy
        bad = ~(np.isfinite(b).all(axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))
        if bad.any():
            raise OvdetError(f"detections file {path}: box {b[bad][0].tolist()} of {entry['image']} is not "
                             "[x1, y1, x2, y2] with x2 > x1, y2 > y1")
        by_key[str(entry["image"])] = dets
        by_key.setdefault(Path(str(entry["image"])).name, dets)
    out = {}
    for image in image_paths:
        dets = by_key.get(image, by_key.get(Path(image).name))
        if dets is None:
            raise OvdetError(f"detections file {path} has no entry for {image} (keys are image paths or file names)")
        out[image] = dets
    return out

def _save_map(relevance: np.ndarray, image: np.ndarray, png: Path, dets=None) -> None:
    from ..draw import save_annotated, save_image
    from ..files import atomic_output
    from .maps import overlay

    with atomic_output(png.with_suffix(".npy")) as tmp, open(tmp, "wb") as fh:
        np.save(fh, relevance.astype(np.float32))
    picture = overlay(image, relevance)
    if dets is not None:
        save_annotated(picture, dets, png, in_place=True)  # the overlay is this function's own copy
    else:
        save_image(picture, png)


def run(args: argparse.Namespace) -> int:
    from ..kit.images import ImageBatches
    from ..kit.options import read_vocabulary
    from ..kit.runs import run_dir_for, saved_to
    from ..detector import Detector, resolve_config
    from . import NOT_A_CLIP_VIT
    from ..io import expand_image_args
    from ..files import write_json

    names = read_vocabulary(args)  # fail before loading a model
    overrides: dict[str, Any] = {"templates": args.templates} if args.templates else {}
    cfg = resolve_config(args.model, device=args.device, **overrides)
    if cfg.backend != "clip":
        raise ConfigError(f"{NOT_A_CLIP_VIT}; --model {args.model} uses the {cfg.backend!r} backend")
    if (args.threshold is not None or args.max_det is not None) and not args.detect_model:
        raise OvdetError("--threshold and --max-det apply to --detect-model only")
    given = None
    if args.detections_from is not None:
        given = _detections_file(args.detections_from, list(expand_image_args(args.images)))
    from .maps import Explainer  # torch: imported once the arguments and files have been checked

    batches = ImageBatches(args.images, 1, desc="explain")
    explainer, detector = None, None
    slugs = _slugs(names)
    out = args.out
    index: list[dict] = []
    used: set[str] = set()
    done = 0
    for paths, arrays in batches:
        if explainer is None:
            explainer = Explainer.from_config(cfg)
            out = run_dir_for(args) if out is None else out  # made once the model has loaded
            out.mkdir(parents=True, exist_ok=True)
            if args.detect_model:
                extra = {k: v for k, v in (("threshold", args.threshold), ("max_detections", args.max_det)) if v is not None}
                detector = Detector.from_pretrained(args.detect_model, device=args.device, **extra)
        for path, image in zip(paths, arrays):
            stem = _unique_stem(path, used)
            h, w = image.shape[:2]
            for name, slug, relevance in zip(names, slugs, explainer.iter_class_maps(image, names, args.method)):
                png = out / f"{stem}_{slug}.png"
                _save_map(relevance, image, png)
                index.append({"image": path, "kind": "class", "class_name": name,
                              "map": str(png.with_suffix(".npy")), "overlay": str(png)})
            if detector is not None:
                dets = detector.detect(image, names)
            else:
                dets = given[path] if given is not None else Detections.empty(names, (h, w))
            for i in range(len(dets)):  # one map at a time: N full-size maps can be gigabytes
                one = dets[i : i + 1]
                name, box = one.labels[0], one.xyxy[0].tolist()
                relevance = explainer.explain_box(image, box, name, args.method)
                png = out / f"{stem}_det{i:02d}_{_slug(name)}.png"  # the index keeps it unique
                _save_map(relevance, image, png, one)
                index.append({"image": path, "kind": "detection", "class_name": name, "box": box,
                              "score": float(one.scores[0]), "map": str(png.with_suffix(".npy")), "overlay": str(png)})
            batches.bar.write(f"{path}: {len(names)} class map(s), {len(dets)} detection map(s)", file=sys.stdout)
            done += 1
    if done:
        write_json(out / "index.json", index, indent=2)
        print(f"ovdet: maps for {done} image(s) (index.json lists them)", file=sys.stderr)
        print(saved_to(out), file=sys.stderr)
    return batches.exit_code(done)
