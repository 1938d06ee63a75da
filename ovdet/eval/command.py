"""`ovdet eval`: score a detector (or an existing results file) on COCO, LVIS or OV-COCO.

    ovdet eval --images val2017/ --annotations instances_val2017.json --model owlv2-b16
    ovdet eval --results results.json --annotations instances_val2017.json --protocol ov-coco

The CLI calls `add_parser(subparsers, common)` to register the subcommand and `run(args)` to
execute it. Exit codes follow `ovdet.cli`: 0 success, 1 some images were skipped (each
reported and counted), user errors raise `OvdetError` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..errors import EXIT_OK, EXIT_PARTIAL, ImageReadError, OvdetError
from . import IOU_TYPES, PROTOCOLS

from ..defaults import DEFAULT_DETECTOR as DEFAULT_MODEL
# AP rewards ranking many candidates, so evaluation keeps nearly all scores instead of the
# preset's display threshold; the per-image cap (--max-det) is what bounds the output.
EVAL_THRESHOLD = 0.001
MAX_DETS = {"coco": 100, "ov-coco": 100, "lvis": 300}
FIXED_AP_MAX_DETS = 1000  # per image, before the 10,000-per-class cap of LVIS Fixed AP
RUN_ONLY = ("limit", "resume", "overwrite", "results_out", "classes_from", "one_shot", "seed")  # besides the model flags
RESULTS_NAME, METRICS_NAME = "results.json", "metrics.json"  # in the run folder
# backends whose detections never carry masks of their own: mask AP needs --masks, said before
# a model loads (any other detector without masks is stopped at its first detections)
BOX_ONLY_BACKENDS = ("owl", "clip", "yolo_world")

EXAMPLES = """examples:
  ovdet eval --images val2017/ --annotations instances_val2017.json --model owlv2-b16 --metrics-out m.json
  ovdet eval --images val2017/ --annotations instances_val2017.json --protocol ov-coco --resume
      (continues the latest unfinished run in runs/eval/)
  ovdet eval --images val2017/ --annotations lvis_v1_val.json --lvis-mode fixed --plots plots/
  ovdet eval --results results.json --annotations instances_val2017.json
  ovdet eval --images val2017/ --annotations instances_val2017.json --iou-type segm --masks facebook/sam2.1-hiera-tiny
  ovdet eval --images val2017/ --annotations instances_val2017.json --protocol coco --one-shot --seed 1
"""


class EvalUsageError(OvdetError, ValueError):
    """Options of `ovdet eval` that do not go together."""


def add_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `eval` subcommand to an argparse subparsers object; returns its parser."""
    from ..kit.options import add_progress_option
    from ..kit.runs import add_run_options
    from ..kit.parser import whole_number

    p = subparsers.add_parser(
        "eval", parents=[common], help="measure AP on COCO, LVIS or OV-COCO",
        description="Run a detector over annotated images (or take an existing COCO results file) and "
                    "compute box or mask AP with pycocotools (COCO, OV-COCO) or lvis-api (LVIS).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="DIR",
                        help="folder with the annotated images: run --model on them")
    source.add_argument("--results", type=Path, metavar="RESULTS.json",
                        help="score this COCO results file (from ovdet or any detector) instead of running a model")
    p.add_argument("--annotations", "-a", type=Path, required=True, metavar="ANN.json",
                   help="COCO or LVIS annotation file (ground truth)")
    p.add_argument("--protocol", choices=PROTOCOLS,
                   help="coco (AP@[.5:.95]), lvis (federated AP, APr/c/f) or ov-coco (AP50 novel/base/all); "
                        "default: lvis for LVIS-style annotations, else coco")
    p.add_argument("--iou-type", choices=IOU_TYPES, default="bbox",
                   help="bbox: box AP (default); segm: mask AP, from the results' segmentation RLEs (a model "
                        "needs --masks MODEL) against the annotations' masks")
    p.add_argument("--lvis-mode", choices=("standard", "fixed"),
                   help="LVIS only: standard = 300 detections per image (default); fixed = Fixed AP, "
                        "10,000 detections per category over the dataset")
    p.add_argument("--classes-from", type=Path, metavar="FILE",
                   help="class names for the model instead of the annotation's: a COCO/LVIS JSON (names by id), "
                        "an {id: name} JSON, or a text file with one name per category in id order "
                        "(ov-coco: its 65 classes)")
    p.add_argument("--results-out", type=Path, metavar="RESULTS.json",
                   help=f"where to write the COCO results (default: {RESULTS_NAME} in the run folder runs/eval/exp<N>)")
    p.add_argument("--metrics-out", type=Path, metavar="METRICS.json",
                   help=f"where to write the metrics as JSON (default: {METRICS_NAME} in the run folder)")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write a precision-recall plot (pr_curve.png) here")
    p.add_argument("--limit", type=whole_number(1), metavar="N", help="only the first N images of the annotation file")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from <results-out>.partial.jsonl (default: the latest "
                             "unfinished run folder runs/eval/<name><N>)")
    resume.add_argument("--overwrite", action="store_true",
                        help="start over where <results-out>.partial.jsonl holds an unfinished run (deletes it)")
    add_progress_option(p)
    p.add_argument("--one-shot", action="store_true",
                   help="one-shot detection (coco protocol): each class is queried by one exemplar box drawn from "
                        "another annotated image instead of by its name")
    p.add_argument("--seed", type=int, help="--one-shot: seed of the exemplar draw (default 0)")
    _add_model_options(p)
    add_run_options(p, "eval")
    return p


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """The model flags of `ovdet detect` (one definition in ovdet.kit.options, so both commands stay in
    step), with evaluation's own defaults for --model, --threshold and --max-det."""
    from ..kit.options import add_model_options

    dests = add_model_options(  # --model None = not given, so --results can refuse it
        p, default_model=None,
        threshold_help=f"score cut in [0, 1] (default for evaluation: {EVAL_THRESHOLD}, not the preset's)",
        max_det_help="most detections per image (default: 100 for coco/ov-coco, 300 for lvis)")
    p.set_defaults(eval_model_options=dests)  # a value of its own, not a changed flag default


def _check_options(args: argparse.Namespace, protocol: str) -> None:
    if args.results is not None:
        only_with_model = (*RUN_ONLY, *getattr(args, "eval_model_options", ()))
        given = [name for name in only_with_model if getattr(args, name, None) not in (None, False)]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise EvalUsageError(
                f"{flag} only applies when running a model (--images); --results scores the file as it is"
            )
    if args.lvis_mode is not None and protocol != "lvis":
        raise EvalUsageError(f"--lvis-mode applies to --protocol lvis, not {protocol}")
    if args.seed is not None and not args.one_shot:
        raise EvalUsageError("--seed applies to --one-shot")
    if args.one_shot:
        if protocol != "coco":
            raise EvalUsageError(f"--one-shot is a coco-protocol evaluation, not {protocol}")
        clash = next((f for f in ("classes_from", "example", "examples") if getattr(args, f, None)), None)
        if clash:
            raise EvalUsageError(f"--one-shot draws its own exemplars: drop --{clash.replace('_', '-')}")


def _results_out(args: argparse.Namespace, folder) -> Path:
    """Where this run's results go: --results-out; with --resume, the latest run folder with an
    unfinished run; otherwise results.json in a new run folder."""
    from ..kit.runs import run_dirs
    from .partial import partial_path, unfinished_run_message

    if args.results_out is not None:
        if partial_path(args.results_out).is_file() and not (args.resume or args.overwrite):
            raise EvalUsageError(unfinished_run_message(partial_path(args.results_out)))  # before loading a model
        return args.results_out
    unfinished = [d for d in run_dirs("eval", args.name, args.project) if partial_path(d / RESULTS_NAME).is_file()]
    if args.resume and unfinished:
        folder.path = unfinished[-1]
        return folder.path / RESULTS_NAME
    if unfinished and not args.resume:
        # never silently: the new run goes to a new folder and the old one stays as it is
        print(f"ovdet: note: {unfinished[-1]} holds an unfinished run; --resume continues it", file=sys.stderr)
    return folder.get() / RESULTS_NAME


def _categories(dataset, protocol: str) -> list[dict]:
    """The categories the model is asked for: all of the file's, or OV-COCO's 65."""
    if protocol == "ov-coco":
        from .ovcoco import load_split

        keep = set(load_split().ids)
        return [cat for cat in dataset.categories if cat["id"] in keep]
    return list(dataset.categories)


def _run_model(args: argparse.Namespace, dataset, protocol: str, folder):
    from ..kit.options import config_overrides
    from ..detector import Detector, resolve_config
    from ..text import validate_vocabulary
    from .runner import run_detector, vocabulary

    if not args.images.is_dir():
        raise ImageReadError(f"image folder not found: {args.images}")
    categories = _categories(dataset, protocol)
    classes = list(validate_vocabulary(vocabulary(categories, args.classes_from)))  # before loading a model
    classes = classes + _category_examples(args, classes)
    one_shot = None
    if args.one_shot:
        from .oneshot import one_shot_vocabulary

        one_shot = one_shot_vocabulary(dataset, categories, args.images, seed=args.seed or 0)
        if one_shot.excluded:
            print(f"ovdet: --one-shot leaves out {len(one_shot.excluded)} categor(y/ies) whose boxes are all in one "
                  f"image (no exemplar from another image): {', '.join(c['name'] for c in one_shot.excluded)}",
                  file=sys.stderr)
        if not one_shot.categories:
            raise EvalUsageError(f"--one-shot: no category of {args.annotations} has boxes in two images of {args.images}")
        classes, categories = one_shot, one_shot.categories
    model = args.model or DEFAULT_MODEL
    overrides = {k: v for k, v in config_overrides(args).items() if v is not None}
    overrides.setdefault("threshold", EVAL_THRESHOLD)
    # Fixed AP caps detections per class over the dataset, not per image: allow many per image
    fixed = protocol == "lvis" and args.lvis_mode == "fixed"
    overrides.setdefault("max_detections", FIXED_AP_MAX_DETS if fixed else MAX_DETS[protocol])
    overrides.setdefault("multi_label", True)  # AP ranks (box, class) pairs; one label per box loses recall
    # a --calibration changes the scores AP ranks; its thresholds are an operating point, not for AP
    overrides.setdefault("calibration_thresholds", False)
    config = resolve_config(model, device=args.device, **overrides)
    if args.iou_type == "segm" and not config.masks and config.backend in BOX_ONLY_BACKENDS:
        from .runner import MASKS_HINT, MasksRequiredError

        raise MasksRequiredError(f"--iou-type segm scores masks, and {model} gives boxes only: {MASKS_HINT}")
    if args.exist_ok and args.results_out is None and not (args.resume or args.overwrite):
        # a reused run folder may hold an unfinished run: refuse before loading a model
        from ..kit.runs import RUNS_ROOT
        from .partial import partial_path, unfinished_run_message

        existing = (args.project or RUNS_ROOT / "eval") / args.name / RESULTS_NAME
        if partial_path(existing).is_file():
            raise EvalUsageError(unfinished_run_message(partial_path(existing)))
    detector = Detector.from_config(config)
    results_out = _results_out(args, folder)
    outcome = run_detector(
        detector, dataset, args.images, classes=classes, category_ids=[c["id"] for c in categories],
        results_out=results_out, limit=args.limit, batch_size=args.batch_size, resume=args.resume,
        overwrite=args.overwrite, progress=not args.no_progress, need_masks=args.iou_type == "segm",
    )
    resumed = f", {outcome.resumed} taken from the interrupted run" if outcome.resumed else ""
    print(f"ovdet: {len(outcome.image_ids)} image(s) detected ({outcome.computed} in {outcome.seconds:.1f} s, "
          f"{outcome.images_per_second:.1f} img/s{resumed}); results in {outcome.results_path}", file=sys.stderr)
    source = {
        "model": model,
        "detector": {k: v for k, v in dataclasses.asdict(config).items() if k != "description"},
        "vocabulary_size": len(categories),
        "results_file": str(outcome.results_path),
        "images_per_second": round(outcome.images_per_second, 3),
    }
    if one_shot is not None:
        source["one_shot"] = one_shot.record()
    return outcome.results, outcome.image_ids, outcome.skipped, source


def _category_examples(args: argparse.Namespace, classes: list[str]) -> list:
    """--example / --examples for evaluation: each must name an evaluated category, whose text
    prompt it joins (`example_weight`); read now, before a model loads."""
    from ..kit.options import read_examples
    from ..exemplars import check_examples

    examples = read_examples(args)
    known = {c.casefold() for c in classes}
    for example in examples:
        if example.name.casefold() not in known:
            raise EvalUsageError(f"exemplar {example.name!r} is not a category of {args.annotations} "
                                 "(exemplars join the category of their name)")
    check_examples(examples)
    return examples


def run(args: argparse.Namespace) -> int:
    """Execute `ovdet eval`; returns the exit code (0 ok, 1 images skipped)."""
    from . import evaluate
    from ..files import write_json
    from .dataset import load_dataset, load_results
    from .lvis import check_lvis
    from .ovcoco import check_split, load_split
    from .report import format_metrics, format_per_category, plot_pr

    dataset = load_dataset(args.annotations)
    protocol = args.protocol or ("lvis" if dataset.kind == "lvis" else "coco")
    _check_options(args, protocol)
    if args.iou_type == "segm":
        from .dataset import check_segmentations

        check_segmentations(dataset)
    if protocol == "lvis":
        check_lvis(dataset)
    elif protocol == "ov-coco":
        check_split(dataset, load_split())

    from ..kit.runs import RunFolder

    folder = RunFolder(args)
    if args.results is not None:
        results = load_results(args.results, dataset, args.iou_type)
        image_ids, skipped, source = None, {}, {"results_file": str(args.results)}
        covered = len({det["image_id"] for det in results})
        if covered < len(dataset.images):
            # standard semantics, but worth saying: a results file from a --limit run scores low
            print(f"ovdet: {args.results} has detections on {covered} of the {len(dataset.images)} annotated "
                  "images; the others are scored as images without detections", file=sys.stderr)
    else:
        results, image_ids, skipped, source = _run_model(args, dataset, protocol, folder)

    if "one_shot" in source:  # scored on the queried categories only
        from .coco import evaluate_coco

        queried = [e["category_id"] for e in source["one_shot"]["exemplars"]]
        evaluation = evaluate_coco(dataset, results, image_ids, category_ids=queried, iou_type=args.iou_type)
    else:
        evaluation = evaluate(protocol, dataset, results, image_ids, lvis_mode=args.lvis_mode or "standard",
                              iou_type=args.iou_type)
    metrics = evaluation.metrics
    per_category = metrics.pop("per_category")
    metrics["num_images_skipped"] = len(skipped)
    metrics["annotations"] = str(args.annotations)
    metrics["source"] = source
    metrics["per_category"] = per_category  # last: the long part of metrics.json

    print(format_metrics(metrics))
    print()
    print(format_per_category(metrics))
    metrics_out = args.metrics_out if args.metrics_out is not None else folder.get() / METRICS_NAME
    write_json(metrics_out, metrics, indent=2)
    if args.metrics_out is not None:
        print(f"ovdet: metrics in {args.metrics_out}", file=sys.stderr)
    if args.plots is not None:
        print(f"ovdet: precision-recall plot in {plot_pr(evaluation, args.plots)}", file=sys.stderr)
    if folder.path is not None:
        from ..kit.runs import saved_to

        print(saved_to(folder.path), file=sys.stderr)
    return EXIT_PARTIAL if skipped else EXIT_OK
