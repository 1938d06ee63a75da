"""`ovdet weights list|download`: which checkpoints are on disk; fetch a preset's."""

from __future__ import annotations

import argparse
import os
import shutil
import textwrap
from pathlib import Path

from ..errors import EXIT_OK
from ..kit.parser import Parser


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    wts = sub.add_parser("weights", parents=[common], help="list or download checkpoints",
                         description="Show presets and which checkpoints are on disk, or download one.")
    wsub = wts.add_subparsers(dest="weights_command", parser_class=Parser, metavar="ACTION")
    lst = wsub.add_parser("list", parents=[common], help="presets and where their checkpoints are")
    lst.add_argument("--long", "-l", action="store_true",
                     help="one line per checkpoint with its full path (not fitted to the terminal)")
    dl = wsub.add_parser("download", parents=[common], help="store a preset's checkpoint under weights/")
    dl.add_argument("preset", help="preset name (see `ovdet weights list`)")
    dl.add_argument("--to", type=Path, help="destination folder (default: ./weights/PRESET)")
    return wts


def run(args: argparse.Namespace) -> int:
    from ..config import load_config, preset_names
    from ..errors import ConfigError, WeightsNotFoundError
    from .. import weights as wmod

    if args.weights_command in (None, "list"):
        return _list(getattr(args, "long", False))
    if args.preset not in preset_names():
        raise ConfigError(f"unknown preset {args.preset!r} (presets: {', '.join(preset_names())})")
    cfg = load_config(args.preset)
    if wmod.offline():
        raise WeightsNotFoundError(f"cannot download {cfg.weights}: HF_HUB_OFFLINE=1 is set; unset it on a machine with internet")
    root = args.to.parent if args.to else wmod.weights_dirs()[0]
    from ..downloads import download_preset

    for source, path in download_preset(cfg, root, main_dir=args.to):
        print(f"stored {source} in {path}")
    print(f"copy {root}/ to weights/ beside ovdet (or point $OVDET_WEIGHTS at it) on the offline machine")
    return EXIT_OK


def _list(long: bool) -> int:
    """The presets, whether their checkpoints are on disk, and what they are for; each line
    fits the terminal (`--long`: every checkpoint's full path instead)."""
    from ..config import load_config, preset_names
    from ..errors import WeightsNotFoundError
    from .. import weights as wmod

    width = shutil.get_terminal_size((100, 24)).columns  # $COLUMNS, the terminal, else 100
    rows = [("PRESET", "ON DISK", "DESCRIPTION")]
    details = []
    for name in preset_names():
        cfg = load_config(name)
        found, missing = [], []
        # every checkpoint the preset needs: main weights, proposer, separate text tower
        for part, weights in (("model", cfg.weights), ("proposer", cfg.proposer_weights), ("text", cfg.text_weights)):
            if not weights:
                continue
            try:
                if weights.endswith(".pt"):  # an ultralytics file, not a transformers folder
                    from ..backends.yolo.files import find_yolo_weights, yolo_weights_source

                    path = find_yolo_weights(weights, preset=cfg.name if part == "model" else "")
                    source = yolo_weights_source(path)
                else:
                    located = wmod.locate(cfg.name if part == "model" else "", weights, download=False)
                    path, source = located.path, located.source
                found.append(source)
                details.append(f"{name}  {part}  {weights}  {source}: {path}")
            except WeightsNotFoundError:
                missing.append(part)
                details.append(f"{name}  {part}  {weights}  missing")
        status = f"no: {', '.join(missing)}" if missing else "yes: " + ", ".join(dict.fromkeys(found))
        rows.append((name, status, cfg.description))
    if long:
        print("\n".join(details))
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        for r in rows:
            line = f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}".rstrip()
            print(line if len(line) <= width else line[: width - 3].rstrip() + "...")
    env = os.environ.get("OVDET_WEIGHTS")
    footer = (f"searched: {', '.join(str(d) for d in wmod.weights_dirs())}, $OVDET_WEIGHTS={env or '(unset)'}, "
              "the Hugging Face cache. Missing: `ovdet weights download PRESET` where the hub is reachable; "
              "`ovdet weights list --long` shows paths")
    print()
    print(textwrap.fill(footer, width=max(width, 40), break_on_hyphens=False))
    return EXIT_OK
