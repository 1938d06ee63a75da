"""`ovdet search`: a text query or an image exemplar -> the best matching regions of an
`ovdet index` database, as (image, box, score) lines, JSON, or a contact sheet.

    ovdet search forklift --db photos.lance --top 20 --sheet hits.png
    ovdet search --example "logo=ref.png:10,10,90,60" --db photos.lance --json

Exit codes: 0 done (also with no hits); 2 user error (bad query, no index, another model).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import EXIT_OK
from ..kit.options import add_example_options, config_overrides, read_examples
from ..kit.parser import UsageError

EXAMPLES = """examples:
  ovdet search forklift --db photos.lance
  ovdet search "forklift,pallet" --db photos.lance --top 50 --threshold 0.2 --sheet hits.png
  ovdet search --example "our logo=logo.png" --db photos.lance --json > hits.json
"""


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser("search", parents=[common], help="find a class (text or exemplar) across an `ovdet index`",
                       description="Score every stored region of an `ovdet index` database against the query with "
                                   "the model's class head (the scores `ovdet detect` gives the same regions) and list "
                                   "the best hits; large indexes go through an ANN index, then exact rescoring.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("query", nargs="?", metavar="QUERY",
                   help='class name(s), comma-separated ("forklift" or "forklift,pallet"); prompt templates apply')
    p.add_argument("--db", required=True, help="the index (folder or LanceDB URI) `ovdet index` built")
    p.add_argument("--top", "-k", type=int, default=20, metavar="K", help="hits to return (default 20)")
    p.add_argument("--threshold", "-t", type=float, help="score cut in [0, 1] (default: the preset's)")
    p.add_argument("--nms-iou", type=float, help="overlap above which one image's hits are one object (default: the preset's)")
    p.add_argument("--negatives", help='comma-separated prompts that must not match, e.g. "toy car"')
    p.add_argument("--templates", help="prompt templates: single, photo, none, one with {} or a file")
    p.add_argument("--calibration", metavar="FILE", help="calibration YAML from `ovdet calibrate` for this model")
    p.add_argument("--model", "-m", help="the model (default: the one the index was built with; another one is refused)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    add_example_options(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--exact", action="store_true", help="score every stored region, even when there is an ANN index")
    mode.add_argument("--ann", action="store_true", help="use the ANN index (an error when the index has none)")
    p.add_argument("--images", action="store_true",
                   help="rank whole images by their stored image vector (cosine) instead of finding regions")
    p.add_argument("--json", action="store_true", help="print the hits as JSON on stdout")
    p.add_argument("--sheet", metavar="IMAGE.png", help="write a contact sheet of the hits with their boxes drawn")
    return p


def run(args: argparse.Namespace) -> int:
    from ..text import validate_vocabulary
    from .store import IndexDatabaseError, Store

    examples = read_examples(args)  # exemplar images read and boxes checked before any model loads
    if args.query is None and not examples:
        raise UsageError("ovdet search: give a QUERY (class names) or an exemplar (--example / --examples)")
    names = validate_vocabulary(args.query) if args.query is not None else ()
    if args.top < 1:
        raise UsageError(f"ovdet search: --top must be at least 1, got {args.top}")
    manifest = Store.read_manifest(args.db)
    if manifest is None:
        raise IndexDatabaseError(f"no ovdet index at {args.db}: build one with `ovdet index IMAGES --db {args.db}`")
    from .api import Index

    index = Index(args.db, model=args.model, device=args.device, **config_overrides(args))
    query = (*names, *examples)
    if args.images:
        found = index.search_images(query, top=args.top)
        if args.json:
            print(json.dumps([h.as_dict() for h in found], indent=2))
        for h in found if not args.json else ():
            print(f"{h.similarity:.4f}  {h.class_name}  {h.path}")
        return EXIT_OK
    hits = index.search(query, top=args.top, threshold=args.threshold, ann=True if args.ann else (False if args.exact else None))
    if args.json:
        print(json.dumps([h.as_dict() for h in hits], indent=2))
    else:
        for h in hits:
            x1, y1, x2, y2 = h.box
            print(f"{h.score:.4f}  {h.class_name}  {h.path}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    if args.sheet:
        from .sheet import contact_sheet

        written = contact_sheet(hits, args.sheet)
        print(f"ovdet: contact sheet {written}" if written else "ovdet: no hits, no contact sheet", file=sys.stderr)
    if not hits:
        print("ovdet: no hits above the threshold", file=sys.stderr)
    return EXIT_OK
