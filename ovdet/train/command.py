"""`ovdet train`: fine-tune OWL-ViT / OWLv2 on a labelled dataset and keep the open vocabulary.

    ovdet train dataset/ --model owlv2-b16 --out runs/train/cars --mode heads --epochs 20
    ovdet train train.json --val val.json --model owlvit-b32 --mode prompt --out prompts/
    torchrun --nproc-per-node 2 -m ovdet train dataset/ --model owlv2-b16 --out ddp/ --batch-size 16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EXIT_OK

EXAMPLES = """examples:
  ovdet train dataset/ --model owlv2-b16 --out runs/train/cars --mode heads --epochs 20
      (an `ovdet label` folder: coco/train.json or yolo/data.yaml, its val split for the report)
  ovdet train train.json --images imgs/ --val 0.2 --model owlvit-b32 --mode prompt --out prompts/
  ovdet train data.yaml --model owlv2-b16 --mode lora --merge 0.5 --merge-report 0,0.25,0.75,1 --out lora/
  ovdet train train.json --val val.json --probe-classes "cat,dog" --model owlv2-b16 --out cars/
  ovdet train dataset/ --model owlv2-b16 --out cars/ --resume       (after an interruption)
  torchrun --nproc-per-node 2 -m ovdet train dataset/ --model owlv2-b16 --out ddp/ --batch-size 16
then: ovdet detect photo.jpg --classes "car,bus" --model cars/model
"""


def add_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..defaults import DEFAULT_DETECTOR
    from ..kit.options import add_progress_option
    from ..kit.parser import whole_number

    p = subparsers.add_parser(
        "train", parents=[common], help="fine-tune an OWL model on your labels, keeping its open vocabulary",
        description="Fine-tune OWL-ViT / OWLv2 (Hungarian matching, focal + L1 + GIoU losses, random negative "
                    "names and prompt templates) and report what it gained on the trained classes and forgot on "
                    "others. DIR/model/ loads with --model in every command.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA", help="COCO annotation .json, YOLO data.yaml, or an `ovdet label` folder")
    p.add_argument("--model", "-m", default=DEFAULT_DETECTOR,
                   help=f"OWL preset, YAML config, checkpoint folder or hub id to start from (default: {DEFAULT_DETECTOR})")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="run folder: model/, metrics.json, loss.png, report.md/json, forgetting.png")
    p.add_argument("--val", metavar="DATA|FRACTION",
                   help="validation set (same forms as DATA) or a fraction of DATA to hold out, e.g. 0.2 "
                        "(default: DATA's own val split if it has one)")
    p.add_argument("--images", type=Path, metavar="DIR", help="image folder of a COCO file (default: beside it)")
    p.add_argument("--mode", choices=("prompt", "heads", "lora", "full"), default="heads",
                   help="what trains: prompt (class embeddings only; other classes untouched), heads (default), "
                        "lora (adapters on the image tower, merged on save), full")
    p.add_argument("--epochs", type=float, default=10.0, help="passes over DATA (default 10)")
    p.add_argument("--steps", type=whole_number(1), metavar="N", help="optimizer steps instead of --epochs")
    p.add_argument("--batch-size", type=whole_number(1), default=8, help="global batch, all processes together (8)")
    p.add_argument("--lr", type=float, help="image-side learning rate (default per mode: prompt 1e-3, heads 1e-4, "
                                            "lora 3e-4, full 5e-5; the text tower gets 1/25 of it)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast precision of the forward pass (default fp32)")
    p.add_argument("--seed", type=int, default=0, help="data order, augmentation, negatives (default 0)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue DIR's interrupted run from its last checkpoint")
    resume.add_argument("--overwrite", action="store_true", help="start over in a DIR that holds a run")
    p.add_argument("--save-every", type=whole_number(0), default=100, metavar="N",
                   help="checkpoint every N steps for --resume (0: never; default 100)")
    p.add_argument("--merge", type=float, metavar="A",
                   help="save (1-A) * base + A * tuned weights (WiSE-FT): keeps more of the open vocabulary")
    p.add_argument("--merge-report", metavar="A,B,...", help="also score these merge weights in the report")
    p.add_argument("--probe-classes", metavar="NAMES|FILE.json",
                   help="untrained classes to measure forgetting on: names of --val categories, or a probe COCO file "
                        "(default: --val categories absent from DATA)")
    p.add_argument("--augment", default="flip,crop,mosaic", help="augmentations: flip, crop, mosaic, or none")
    p.add_argument("--templates", default="photo",
                   help="prompt templates drawn at random per class name while training: a set (photo, single, "
                        "none), one template with {} or a file (default: photo, 12 phrasings)")
    p.add_argument("--num-negatives", type=whole_number(0), default=50, metavar="K",
                   help="random negative class names per image (default 50)")
    p.add_argument("--no-report", action="store_true", help="skip the before/after evaluation")
    add_progress_option(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import OvdetError
    from ..kit.runs import saved_to
    from ..progress import write_line
    from .api import TrainOptions, train
    from .merge import parse_alphas

    try:
        alphas = parse_alphas(args.merge_report or "")
        if args.merge is not None:
            parse_alphas(str(args.merge))
    except ValueError as exc:
        raise OvdetError(f"--merge / --merge-report: {exc}") from None
    opts = TrainOptions(data=args.data, model=args.model, out=args.out, val=args.val, images=args.images,
                        mode=args.mode, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        device=args.device, precision=args.precision, seed=args.seed, resume=args.resume,
                        overwrite=args.overwrite, save_every=args.save_every, merge=args.merge, merge_report=alphas,
                        probe_classes=args.probe_classes, augment=args.augment, templates=args.templates, num_negatives=args.num_negatives,
                        report=not args.no_report, progress=not args.no_progress)
    result = train(opts)
    if result.is_main:  # under torchrun, rank 0 speaks for the run
        if result.losses:
            write_line(f"ovdet: loss {result.losses[0]['loss']:.4f} -> {result.losses[-1]['loss']:.4f} "
                       f"over {len(result.losses)} steps")
        if result.report:
            write_line((args.out / "report.md").read_text(encoding="utf-8").split("\n\n", 2)[-1].rstrip())
        write_line(saved_to(args.out) + f" (model: {args.out / 'model'})")
    return EXIT_OK
