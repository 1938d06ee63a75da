"""`ovdet label`: SOURCE... -> a training dataset in --out (COCO, YOLO, VOC, Label Studio).

    ovdet label photos/ --out dataset/ --classes "car,person" --format coco,yolo --split train=0.8,val=0.2
    ovdet label photos/ --classes car                   (without --out: a run folder runs/label/exp<N>)
    ovdet label bucket.txt --out dataset/ --ontology ontology.yaml --engine ray --workers 4 --gpus-per-worker 1

Exit codes: 0 done; 1 some images were unreadable (listed in report.json); 2 user error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..kit.options import add_engine_options, add_model_options, add_progress_option, config_overrides
from ..kit.runs import RunFolder, add_run_options, run_dirs, saved_to
from ..errors import EXIT_OK, EXIT_PARTIAL

EXAMPLES = """examples:
  ovdet label photos/ --out dataset/ --classes "car,person,bicycle" --split train=0.8,val=0.2
  ovdet label photos/ --out dataset/ --ontology ontology.yaml --format coco,yolo,voc,labelstudio --review 16
  ovdet label photos/ --out dataset/ --ontology ontology.yaml --resume          # after a crash or Ctrl-C
  ovdet label list.txt --out dataset/ --classes car --engine ray --workers 4 --gpus-per-worker 1
  ovdet label photos/ --out dataset/ --classes "car,person" --masks facebook/sam2.1-hiera-tiny --format coco,yolo,voc
ontology.yaml:
  car: [car, automobile, a sedan]                  # several prompts, one class
  person: {prompts: [person, pedestrian], threshold: 0.2}
"""


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser("label", parents=[common], help="auto-label images into a dataset (COCO, YOLO, VOC, Label Studio)",
                       description="Label images with an open-vocabulary detector and write a training dataset. "
                                   "Results are saved chunk by chunk: --resume continues an interrupted run.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="image files, folders (recursive), glob patterns, or .txt files listing paths")
    p.add_argument("--out", "-o", type=Path,
                   help="output folder (must be empty unless --resume/--overwrite; default: a new run folder "
                        "runs/label/exp<N>, with --resume the latest one holding a run)")
    vocab = p.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", "-c", help='comma-separated class names, each its own prompt: "car,person"')
    vocab.add_argument("--ontology", type=Path,
                       help="YAML: {class: [prompts]} or {classes: {...}, negatives: [...]}; per-class threshold allowed")
    p.add_argument("--format", default="coco,yolo", help="comma-separated: coco, yolo, voc, labelstudio (default: coco,yolo)")
    p.add_argument("--split", help="fractions summing to 1, e.g. train=0.8,val=0.2 (default: all train)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of --review's picks (default 0)")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (same settings)")
    state.add_argument("--overwrite", action="store_true", help="start over, replacing an earlier run in --out")
    p.add_argument("--review", type=int, default=0, metavar="N", help="contact sheet of N random annotated images: DIR/review.jpg")
    p.add_argument("--copy-images", action="store_true", help="copy images into the export instead of linking them")
    p.add_argument("--mask-format", choices=("rle", "polygon"), default="rle",
                   help="with --masks: COCO segmentation as RLE (default) or polygons; Label Studio brush (rle) "
                        "or polygon regions. YOLO always gets polygons, VOC PNGs")
    p.add_argument("--labelstudio-root", default="/", metavar="DIR",
                   help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT; image URLs are relative to it (default /)")
    add_engine_options(p)
    add_progress_option(p)
    add_model_options(p)
    add_run_options(p, "label")
    return p


def _out(args: argparse.Namespace) -> tuple[Path, bool]:
    """--out, else a run folder: with --resume the latest one holding a label run, else a new
    one. Returns (folder, whether it is a run folder)."""
    from .shards import ShardStore

    if args.out is not None:
        return args.out, False
    if args.resume:
        runs = [d for d in run_dirs("label", args.name, args.project) if ShardStore(d).exists()]
        if runs:
            return runs[-1], True
    return RunFolder(args).get(), True


def run(args: argparse.Namespace) -> int:
    from .dataset import parse_split
    from .exporters import parse_formats
    from .ontology import Ontology

    # cheap checks first: a typo is answered before torch loads
    onto = Ontology.from_yaml(args.ontology) if args.ontology is not None else Ontology.from_classes(args.classes)
    formats = parse_formats(args.format)
    split = parse_split(args.split)
    from .api import label

    out, is_run_folder = _out(args)
    report = label(args.sources, onto, out, formats=formats, engine=args.engine, model=args.model,
                   split=split, seed=args.seed, resume=args.resume, overwrite=args.overwrite, review=args.review,
                   copy_images=args.copy_images, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                   cpus_per_worker=args.cpus_per_worker, ray_address=args.ray_address,
                   labelstudio_root=args.labelstudio_root, mask_format=args.mask_format, device=args.device, progress=not args.no_progress,
                   quiet_engine=not args.debug, **config_overrides(args))
    per_class = ", ".join(f"{k} {v['boxes']}" for k, v in report["classes"].items())
    print(f"ovdet: {report['images']} image(s) labelled, {report['boxes']} box(es) ({per_class}), "
          f"{report['skipped']} skipped; dataset in {out} ({', '.join(report['settings']['formats'])})",
          file=sys.stderr)
    if is_run_folder:
        print(saved_to(out), file=sys.stderr)
    return EXIT_PARTIAL if report["skipped"] else EXIT_OK
