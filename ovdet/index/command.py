"""`ovdet index`: IMAGES -> a LanceDB index of their regions, searched by `ovdet search`.

    ovdet index photos/ --db photos.lance --model owlv2-b16
    ovdet index photos/ --db photos.lance              (again: encodes only new or changed images)

Exit codes: 0 done; 1 some images were missing or unreadable (each listed); 2 user error.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import EXIT_OK, EXIT_PARTIAL
from ..kit.options import add_engine_options, add_progress_option, config_overrides

EXAMPLES = """examples:
  ovdet index photos/ --db photos.lance --model owlv2-b16
  ovdet index photos/ new/*.jpg --db photos.lance     # only new or changed images are encoded
  ovdet index list.txt --db s3://bucket/photos.lance --engine ray --workers 4 --gpus-per-worker 1
  ovdet search forklift --db photos.lance --top 20 --sheet hits.png
"""


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser("index", parents=[common], help="index images' regions for `ovdet search` (LanceDB)",
                       description="Encode images once and store their top regions (OWL region features, or "
                                   "CLIP-region embeddings of the proposer's boxes) in a LanceDB database, so that "
                                   "`ovdet search` finds any class in them without running the model on them again. "
                                   "Running it again encodes only new or changed images (path, size, mtime); a killed "
                                   "run resumes where it stopped.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="IMAGE",
                   help="image files, folders (recursive) or glob patterns")
    p.add_argument("--db", required=True, help="the index: a folder, or a LanceDB URI such as s3://bucket/index")
    p.add_argument("--model", "-m", help="preset, YAML, checkpoint folder or hub id (default: the index's model, "
                                         "else owlv2-b16); an existing index refuses another model")
    p.add_argument("--regions", type=int, metavar="N", help="regions kept per image (default 100; fixed at creation)")
    p.add_argument("--vectors", choices=["fp16", "fp32"],
                   help="stored vector precision (default fp16; fp32 doubles the size and gives scores equal to "
                        "ovdet detect's to float precision; fixed at creation)")
    p.add_argument("--ann-min-rows", type=int, metavar="N",
                   help="build the ANN index once the index holds N regions (default 200000)")
    p.add_argument("--ann-index", choices=["ivf_sq", "ivf_pq"], default="ivf_sq",
                   help="ANN index kind: IVF with 8-bit scalar quantisation (default) or product quantisation "
                        "(smaller, much slower to build on fp16 vectors)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], help="numeric precision of the towers")
    p.add_argument("--batch-size", type=int, help="images per forward pass (and per write)")
    p.add_argument("--json", action="store_true", help="print the run's report as JSON on stdout")
    add_engine_options(p)
    add_progress_option(p)
    return p


def run(args: argparse.Namespace) -> int:
    from .build import build_index

    ray_options = {"workers": args.workers, "gpus_per_worker": args.gpus_per_worker,
                   "cpus_per_worker": args.cpus_per_worker, "address": args.ray_address, "quiet": not args.debug}
    report = build_index(args.db, args.sources, args.model, regions=args.regions, dtype=args.vectors,
                         engine=args.engine, device=args.device, progress=not args.no_progress,
                         ann_min_rows=args.ann_min_rows, ann_kind=args.ann_index, ray_options=ray_options, **config_overrides(args))
    for path, reason in report.skipped:
        print(f"ovdet: skipped {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    print(f"ovdet: {report.encoded} image(s) encoded ({report.changed} changed), {report.unchanged} unchanged, "
          f"{len(report.skipped)} skipped; {args.db} holds {report.images} image(s), {report.regions} region(s)"
          f"{', ANN index' if report.ann else ''} ({report.seconds:.1f} s)", file=sys.stderr)
    return EXIT_PARTIAL if report.skipped else EXIT_OK
