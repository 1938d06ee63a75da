"""`ovdet calibrate`: fit per-class score calibrations and thresholds from labelled images, or
apply a calibration to a COCO results file.

    ovdet calibrate --images imgs/ --annotations ann.json --model owlv2-b16 --target precision=0.9
    ovdet calibrate --results R.json --annotations ann.json --model owlv2-b16 --method isotonic
    ovdet calibrate --apply calibration.yaml --results R.json --out R_calibrated.json

The CLI calls `add_parser(subparsers, common)` and `run(args)`; user errors raise `OvdetError`
(one line, exit 2). Heavy imports happen inside `run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..errors import EXIT_OK, EXIT_PARTIAL, ImageReadError, OvdetError

from ..defaults import DEFAULT_DETECTOR as DEFAULT_MODEL
DEFAULT_OUT = Path("calibration.yaml")  # in the run folder runs/calibrate/exp<N> unless --out
RESULTS_NAME = DEFAULT_OUT.stem + ".results.json"  # the detections of --images, beside it
# the detector runs with a very low cut so that the fit sees the low scores too; the
# calibrated thresholds then decide what is shown
CANDIDATE_THRESHOLD = 0.001
METHODS = ("temperature", "platt", "isotonic")

EXAMPLES = """examples:
  ovdet calibrate --images imgs/ --annotations ann.json --model owlv2-b16 --target precision=0.9 --plots plots/
  ovdet calibrate --results results.json --annotations ann.json --model owlv2-b16 --method isotonic
  ovdet calibrate --apply calibration.yaml --results results.json --out results_calibrated.json
  ovdet detect photo.jpg --classes-from ann.json --calibration calibration.yaml
"""


class CalibrateUsageError(OvdetError, ValueError):
    """Options of `ovdet calibrate` that do not go together, or classes the annotations lack."""


def _iou(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"IoU must be in (0, 1), got {text!r}")
    return value


def add_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `calibrate` subcommand; returns its parser."""
    from ..kit.options import add_model_options, add_progress_option
    from ..kit.runs import add_run_options
    from ..kit.parser import whole_number

    p = subparsers.add_parser(
        "calibrate", parents=[common], help="fit per-class score calibration and thresholds from labelled images",
        description="Match detections to COCO/LVIS annotations (IoU 0.5, crowd regions ignored), fit a map "
                    "from score to the probability of a true positive (per class where there is enough data, "
                    "shared otherwise) and a threshold per class; or rewrite a results file with calibrated scores.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group()  # --images | --results | --apply + --results: checked in run
    source.add_argument("--images", type=Path, metavar="DIR", help="folder with the annotated images: run --model on them")
    source.add_argument("--apply", type=Path, metavar="CALIBRATION.yaml",
                        help="rewrite --results with this calibration's scores (raw score kept as raw_score)")
    p.add_argument("--results", type=Path, metavar="RESULTS.json",
                   help="COCO results to calibrate (instead of --images), or to rewrite (with --apply)")
    p.add_argument("--annotations", "-a", type=Path, metavar="ANN.json",
                   help="COCO or LVIS annotations (ground truth); with --apply, optional: names categories by id")
    p.add_argument("--classes", help='calibrate only these annotation categories, comma-separated ("cat,dog")')
    p.add_argument("--target", default="f1", metavar="precision=P|f1",
                   help="per-class threshold: the highest recall reaching precision P, or the best F1 (default: f1)")
    p.add_argument("--method", choices=METHODS, default="platt",
                   help="temperature (of the logit), platt (logistic on the logit) or isotonic (default: platt)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help=f"the calibration YAML (default: {DEFAULT_OUT} in the run folder runs/calibrate/exp<N>); "
                        "with --apply, the rewritten results (default: <results>_calibrated.json)")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write reliability.png and pr/<class>.png here")
    p.add_argument("--iou", type=_iou, default=0.5, help="IoU for a detection to match a ground-truth box (default 0.5)")
    p.add_argument("--min-examples", type=whole_number(1), default=10, metavar="N",
                   help="a class gets its own fit with at least N true and N false positives, else the shared one "
                        "(default 10)")
    p.add_argument("--folds", type=int, default=5, metavar="K",
                   help="cross-validation folds over images (default 5; below 2: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    p.add_argument("--results-out", type=Path, metavar="RESULTS.json",
                   help="with --images: where the detections are written (default: <out>.results.json, "
                        f"{RESULTS_NAME} in the run folder)")
    p.add_argument("--limit", type=whole_number(1), metavar="N", help="only the first N images of the annotations")
    p.add_argument("--resume", action="store_true", help="continue an interrupted detection run")
    add_progress_option(p)
    add_model_options(  # --model None = not given: with --results the file records no model
        p, default_model=None,
        model_help=(f"preset, YAML config, checkpoint folder or hub id (default: {DEFAULT_MODEL}); with "
                    "--results, the model that produced them, recorded so that others are refused"),
        threshold_help=f"lowest score the detector reports for fitting (default: {CANDIDATE_THRESHOLD})")
    add_run_options(p, "calibrate")
    return p


def _check_options(args: argparse.Namespace) -> None:
    if getattr(args, "calibration", None):
        raise CalibrateUsageError("--calibration applies a calibration; ovdet calibrate fits one from raw scores "
                                  "(drop --calibration, or use --apply to rewrite a results file)")
    if args.apply is not None:
        if args.results is None:
            raise CalibrateUsageError("--apply needs --results RESULTS.json (the file to rewrite)")
        for flag in ("images", "plots", "classes", "results_out", "limit", "model"):
            if getattr(args, flag, None) not in (None, False):
                raise CalibrateUsageError(f"--{flag.replace('_', '-')} does not apply to --apply")
        return
    if args.annotations is None:
        raise CalibrateUsageError("fitting needs --annotations ANN.json (the ground truth)")
    if args.images is None and args.results is None:
        raise CalibrateUsageError("give --images DIR (run a model) or --results RESULTS.json (existing detections)")
    if args.images is not None and args.results is not None:
        raise CalibrateUsageError("give --images (run a model) or --results (existing detections), not both")
    if args.results is not None:
        for flag in ("results_out", "limit", "resume"):
            if getattr(args, flag, None) not in (None, False):
                raise CalibrateUsageError(f"--{flag.replace('_', '-')} only applies when running a model (--images)")


def _categories(dataset, classes: str | None) -> list[dict]:
    """The calibrated categories: all, or those named by --classes (matched case-insensitively,
    LVIS underscores as spaces)."""
    from ..eval.categories import prompt_name
    from ..text import validate_vocabulary

    if classes is None:
        return list(dataset.categories)
    wanted = validate_vocabulary(classes)
    by_name = {prompt_name(c["name"]).casefold(): c for c in dataset.categories}
    missing = [n for n in wanted if prompt_name(n).casefold() not in by_name]
    if missing:
        shown = ", ".join(prompt_name(c["name"]) for c in dataset.categories[:8])
        more = ", ..." if len(dataset.categories) > 8 else ""
        raise CalibrateUsageError(
            f"{dataset.path.name} has no category {missing[0]!r}"
            + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else "")
            + f": it cannot calibrate it (categories: {shown}{more})")
    return [by_name[prompt_name(n).casefold()] for n in wanted]


def _config(args: argparse.Namespace, model: str):
    from ..kit.options import config_overrides
    from ..detector import resolve_config

    overrides = {k: v for k, v in config_overrides(args).items() if v is not None}
    overrides.setdefault("threshold", CANDIDATE_THRESHOLD)
    config = resolve_config(model, device=args.device, **overrides)
    if config.calibration:
        raise CalibrateUsageError(f"{model} applies the calibration {config.calibration}: fit on raw scores "
                                  "(a config without `calibration:`)")
    return config


def _calibration_out(args: argparse.Namespace, folder) -> Path:
    """--out, else calibration.yaml in the run folder runs/calibrate/exp<N>; with --resume, the
    latest run folder holding an unfinished detection run."""
    from ..eval.partial import partial_path
    from ..kit.runs import run_dirs

    if args.out is not None:
        return args.out
    if folder.path is None and getattr(args, "resume", False):
        unfinished = [d for d in run_dirs("calibrate", args.name, args.project)
                      if partial_path(d / RESULTS_NAME).is_file()]
        if unfinished:
            folder.path = unfinished[-1]
    return folder.get() / DEFAULT_OUT


def _run_model(args: argparse.Namespace, dataset, categories: list[dict], names: list[str], folder):
    from ..detector import Detector
    from ..eval.runner import run_detector

    if not args.images.is_dir():
        raise ImageReadError(f"image folder not found: {args.images}")
    config = _config(args, args.model or DEFAULT_MODEL)
    detector = Detector.from_config(config)
    out = _calibration_out(args, folder)
    results_out = args.results_out or out.with_name(out.stem + ".results.json")
    outcome = run_detector(detector, dataset, args.images, classes=names, category_ids=[c["id"] for c in categories],
                           results_out=results_out, limit=args.limit, batch_size=args.batch_size,
                           resume=args.resume, progress=not args.no_progress, desc="calibrate")
    print(f"ovdet: {len(outcome.image_ids)} image(s) detected ({outcome.computed} in {outcome.seconds:.1f} s); "
          f"detections in {outcome.results_path}", file=sys.stderr)
    run = {"results_file": str(outcome.results_path), "threshold": config.threshold, "nms_iou": config.nms_iou,
           "class_agnostic_nms": config.class_agnostic_nms, "multi_label": config.multi_label,
           "max_detections": config.max_detections}
    return outcome.results, outcome.image_ids, outcome.skipped, config, detector.templates, run


def _identity_for_results(args: argparse.Namespace):
    """With --results: the model named by --model (and its flags), without loading it."""
    from ..text import resolve_templates

    if args.model is None:
        return None, None
    config = _config(args, args.model)
    return config, resolve_templates(config.templates)


def run(args: argparse.Namespace) -> int:
    """Execute `ovdet calibrate`; returns the exit code (0 ok, 1 images skipped)."""
    from .thresholds import Target, TargetError

    _check_options(args)
    if args.apply is not None:
        return _apply(args)
    try:
        target = Target.parse(args.target)
    except TargetError as exc:
        raise CalibrateUsageError(str(exc)) from None

    from ..eval.dataset import load_dataset, load_results
    from ..calibration import model_identity
    from ..eval.categories import prompt_name
    from .pipeline import CalibrationDataError, calibrate_results
    from .report import format_report, plot_pr_curves, plot_reliability

    from ..kit.runs import RunFolder

    folder = RunFolder(args)
    dataset = load_dataset(args.annotations)
    categories = _categories(dataset, args.classes)
    names = [prompt_name(c["name"]) for c in categories]
    skipped: dict = {}
    if args.results is not None:
        results = load_results(args.results, dataset)
        image_ids = dataset.image_ids
        covered = len({det["image_id"] for det in results})
        if results and covered < len(image_ids):
            # as in eval: standard semantics, but a results file of a --limit run lowers recall
            print(f"ovdet: {args.results} has detections on {covered} of the {len(image_ids)} annotated images; "
                  "objects on the others count as missed (recall)", file=sys.stderr)
        config, templates = _identity_for_results(args)
        run_info = {"results_file": str(args.results)}
        source = str(args.results)
    else:
        results, image_ids, skipped, config, templates, run_info = _run_model(args, dataset, categories, names, folder)
        source = run_info["results_file"]

    wanted = {c["id"] for c in categories}
    if not any(det["category_id"] in wanted for det in results):
        raise CalibrationDataError(f"{source} has no detections of the {len(wanted)} calibrated class(es): "
                                   "nothing to calibrate")
    print(f"ovdet: matching {len(results)} detection(s) to the ground truth (pycocotools), fitting {args.method}"
          + (f" with {args.folds}-fold cross-validation" if args.folds >= 2 else ""), file=sys.stderr)
    outcome = calibrate_results(
        dataset, results, method=args.method, target=target, names_by_id={c["id"]: n for c, n in zip(categories, names)},
        image_ids=image_ids, iou=args.iou, min_examples=args.min_examples, folds=args.folds, seed=args.seed,
        source=source)
    cal = outcome.calibration
    fitted = {**cal.fitted, "method": args.method, "target": str(target), "folds": args.folds, "seed": args.seed,
              **run_info}
    cal = dataclasses.replace(
        cal, fitted=fitted,
        model=model_identity(config) if config is not None else None,
        templates=tuple(templates) if templates is not None else None,
    )
    out = _calibration_out(args, folder)
    cal.save(out)
    print(format_report(cal))
    missed = [name for name, e in cal.classes.items() if e.source == "class" and not e.stats.get("target_reached", True)]
    if not cal.shared_stats.get("target_reached", True):
        missed.insert(0, "(shared)")
    if missed:
        print(f"ovdet: warning: no threshold reaches {target} for {len(missed)} fit(s) ({', '.join(missed[:6])}"
              f"{', ...' if len(missed) > 6 else ''}): their thresholds are the most precise points "
              "(target_reached: false in the file)", file=sys.stderr)
    if config is None:
        print("ovdet: no --model given: the calibration records no model identity, so detectors cannot check "
              "that it is theirs", file=sys.stderr)
    print(f"ovdet: calibration in {out}", file=sys.stderr)
    if folder.path is not None:
        from ..kit.runs import saved_to

        print(saved_to(folder.path), file=sys.stderr)
    if args.plots is not None:
        reliability = plot_reliability(outcome.examples, cal, outcome.cv, args.plots)
        curves = plot_pr_curves(outcome.examples, cal, args.plots, progress=not args.no_progress)
        print(f"ovdet: plots in {reliability} and {len(curves)} precision-recall curve(s) under "
              f"{Path(args.plots) / 'pr'}", file=sys.stderr)
    return EXIT_PARTIAL if skipped else EXIT_OK


def _apply(args: argparse.Namespace) -> int:
    from ..eval.dataset import ResultsError, check_results, load_dataset
    from ..calibration import load_calibration
    from ..eval.categories import prompt_name
    from ..files import read_json, write_json
    from .pipeline import apply_to_results

    cal = load_calibration(args.apply)
    raw = read_json(args.results, "results file", error=ResultsError)
    names_by_id = None
    if args.annotations is not None:
        dataset = load_dataset(args.annotations)
        results = check_results(raw, dataset, source=str(args.results))
        names_by_id = {c["id"]: prompt_name(c["name"]) for c in dataset.categories}
    else:
        results = _check_bare_results(raw, str(args.results))
    if not results:
        raise ResultsError(f"{args.results} has no detections: nothing to calibrate")
    if any("raw_score" in det for det in results):
        raise ResultsError(f"{args.results} already has raw_score entries: it looks calibrated already "
                           "(apply the calibration to the original results)")
    if names_by_id is None and not cal.by_category_id():
        raise CalibrateUsageError(f"{args.apply} records no category ids: pass --annotations to name the categories")
    out_results, unknown = apply_to_results(cal, results, names_by_id)
    out = args.out or args.results.with_name(args.results.stem + "_calibrated.json")
    write_json(out, out_results, indent=None)
    if unknown:
        print(f"ovdet: {unknown} detection(s) are of categories {args.apply} has no entry for: they got its shared "
              "calibration", file=sys.stderr)
    print(f"ovdet: {len(out_results)} detection(s) calibrated ({cal.method}); results in {out} "
          "(original scores in raw_score)", file=sys.stderr)
    return EXIT_OK


def _check_bare_results(raw, source: str) -> list[dict]:
    """Without annotations: a list of objects with an integer category_id and a finite score."""
    import math

    from ..eval.dataset import ResultsError

    if not isinstance(raw, list):
        raise ResultsError(f"{source} is not a COCO results file: expected a JSON list of detections")
    for i, det in enumerate(raw):
        ok = (isinstance(det, dict) and isinstance(det.get("category_id"), int)
              and isinstance(det.get("score"), (int, float)) and not isinstance(det.get("score"), bool)
              and math.isfinite(det["score"]))
        if not ok:
            raise ResultsError(f"{source}: entry #{i + 1} needs an integer 'category_id' and a finite 'score'")
    return raw
