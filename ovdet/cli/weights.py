"""`ovdet weights list|download`: which checkpoints are on disk; fetch a preset's."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import EXIT_OK
from .options import Parser


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    wts = sub.add_parser("weights", parents=[common], help="list or download checkpoints",
                         description="Show presets and which checkpoints are on disk, or download one.")
    wsub = wts.add_subparsers(dest="weights_command", parser_class=Parser, metavar="ACTION")
    wsub.add_parser("list", parents=[common], help="presets and where their checkpoints are")
    dl = wsub.add_parser("download", parents=[common], help="store a preset's checkpoint under weights/")
    dl.add_argument("preset", help="preset name (see `ovdet weights list`)")
    dl.add_argument("--to", type=Path, help="destination folder (default: ./weights/PRESET)")
    return wts


def run(args: argparse.Namespace) -> int:
    from ..config import load_config, preset_names
    from ..errors import ConfigError, WeightsNotFoundError
    from .. import weights as wmod

    if args.weights_command in (None, "list"):
        rows = [("PRESET", "CHECKPOINT", "ON DISK", "DESCRIPTION")]
        for name in preset_names():
            cfg = load_config(name)
            found, missing = [], []
            # every checkpoint the preset needs: main weights, proposer, separate text tower
            for part, weights in (("", cfg.weights), ("proposer ", cfg.proposer_weights), ("text ", cfg.text_weights)):
                if not weights:
                    continue
                try:
                    if weights.endswith(".pt"):  # an ultralytics file, not a transformers folder
                        from ..backends.yolo.files import find_yolo_weights

                        found.append(f"{part}{find_yolo_weights(weights, preset=cfg.name if not part else '')}")
                    else:
                        located = wmod.locate(cfg.name if not part else "", weights, download=False)
                        found.append(f"{part}{located.source}: {located.path}")
                except WeightsNotFoundError:
                    missing.append(f"{part}{weights}".strip())
            where = f"no: {', '.join(missing)} (ovdet weights download {name})" if missing else "; ".join(found)
            rows.append((name, cfg.weights, where, cfg.description))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
        env = os.environ.get("OVDET_WEIGHTS")
        print(f"\nsearched: {', '.join(str(d) for d in wmod.weights_dirs())}, "
              f"$OVDET_WEIGHTS={env or '(unset)'}, the Hugging Face cache")
        return EXIT_OK
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
