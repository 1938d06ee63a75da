"""`ovdet weights download`: every checkpoint a preset needs, transformers folders from the
Hugging Face hub and ultralytics .pt files from ultralytics' release assets.

Sits above `ovdet.weights` (hub checkpoints) and `ovdet.backends.yolo.files` (YOLO files), so
neither of those imports the other.
"""

from __future__ import annotations

from pathlib import Path

from . import weights as wmod  # module attribute: tests replace `weights.fetch` (no network)
from .backends.yolo.files import download_yolo_asset
from .errors import WeightsNotFoundError, first_line


def download_preset(cfg, root: Path, main_dir: Path | None = None) -> list[tuple[str, Path]]:
    """Download every checkpoint a preset needs into `root` (a `weights/` folder).

    The main checkpoint goes to `root/<preset>/` (or `main_dir`); hub-hosted components
    (proposer, separate text tower) to the folder of the preset that owns them, or their hub
    id's last part, where `locate` looks for them. YOLO files are fetched by ultralytics
    (`download_yolo_asset`).
    Returns (what, where) pairs. Raises `WeightsNotFoundError` with one line on failure.
    """
    jobs = [(cfg.weights, main_dir or root / cfg.name)]
    for component in (cfg.proposer_weights, cfg.text_weights):
        if component and wmod.looks_like_hub_id(component):
            jobs.append((component, root / (wmod.aliases(component) or [component.split("/")[-1]])[0]))
        elif component.endswith(".pt"):
            jobs.append((component, root / component))
    done = []
    for source, dest in jobs:
        try:
            if source.endswith(".pt"):  # an ultralytics release asset, e.g. yolov8s-worldv2.pt
                # weights/<file>.pt, where find_yolo_weights looks (or the --to folder)
                done.append((source, download_yolo_asset(source, main_dir if source == cfg.weights and main_dir else root)))
            else:
                done.append((source, wmod.fetch(source, local_dir=dest)))
        except WeightsNotFoundError:
            raise
        except Exception as exc:  # network and hub errors come in many types
            raise WeightsNotFoundError(f"cannot download {source} to {dest}: {first_line(exc)}") from exc
    return done


__all__ = ["download_preset"]
