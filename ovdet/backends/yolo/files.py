"""Locating, downloading and loading ultralytics YOLO checkpoint files (.pt).

Security: ultralytics `.pt` files are pickles, opened with `torch.load(weights_only=False)`;
unpickling runs code chosen by whoever wrote the file. Use only files you trust (the official
ultralytics release assets, or files you trained). Setting `ULTRALYTICS_SAFE_LOAD=1` before
starting makes ultralytics load with `weights_only=True` and an allow-list of its own classes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...config import preset_names, presets_dir, read_config_file
from ...errors import ConfigError, WeightsNotFoundError
from ...weights import weights_dirs
from .offline import downloads_allowed, error_line, ultralytics_offline

if TYPE_CHECKING:  # finding a file (`ovdet weights list`) needs no torch
    import torch


def _presets_using(filename: str) -> list[str]:
    """Shipped presets whose weights or proposer_weights is `filename` (for the fix hint)."""
    found = []
    for name in preset_names():
        try:
            data = read_config_file(presets_dir() / f"{name}.yaml")
        except ConfigError:
            continue
        if filename in (str(data.get("weights", "")), str(data.get("proposer_weights", ""))):
            found.append(name)
    return found


def yolo_weights_source(path: Path) -> str:
    """Where `find_yolo_weights` found `path`, in `ovdet.weights.Located.source`'s words:
    "weights/", "OVDET_WEIGHTS" or "path" (given as a path)."""
    env = os.environ.get("OVDET_WEIGHTS")
    for source, dirs in (("weights/", weights_dirs()), ("OVDET_WEIGHTS", [Path(env).expanduser()] if env else [])):
        if any(d.absolute() in Path(path).absolute().parents for d in dirs):  # d/<file> or d/<preset>/<file>
            return source
    return "path"


def find_yolo_weights(filename_or_path: str | Path, preset: str = "") -> Path:
    """The local file for an ultralytics weights file name or path.

    Looks at, in order: the value itself when it is an existing file; `weights/<file>` (and
    `weights/<preset>/<file>` when a preset is named) under the current directory, then under
    the ovdet checkout; `$OVDET_WEIGHTS/<file>`. Never downloads. Raises `WeightsNotFoundError`
    with one line naming every place looked and how to fix it.

    The file is a pickle (see the module docstring): only use files you trust.
    """
    text = str(filename_or_path).strip()
    if not text:
        raise WeightsNotFoundError("no YOLO weights file configured (set weights / proposer_weights to a .pt file)")
    given = Path(text).expanduser()
    if given.is_file():
        return given
    name = given.name
    candidates = [given] if given.parent != Path(".") or given.is_absolute() else []
    for d in weights_dirs():
        candidates.append(d / name)
        if preset:
            candidates.append(d / preset / name)
    env = os.environ.get("OVDET_WEIGHTS")
    if env:
        candidates.append(Path(env).expanduser() / name)
    for path in candidates:
        if path.is_file():
            return path
    looked = [str(p) for p in candidates] + ([] if env else ["$OVDET_WEIGHTS (unset)"])
    presets = [preset] if preset in preset_names() else _presets_using(name)
    if presets:
        fix = f"run `ovdet weights download {presets[0]}` where the network is reachable and copy weights/{name} here"
    else:
        fix = f"download {name} (ultralytics release assets) where the network is reachable and put it in weights/"
    # the fix first and the line short; the places looked go to the details (--debug)
    raise WeightsNotFoundError(f"{fix}: no {name} on this machine (--debug: places looked)",
                               details="ovdet looked in:\n  " + "\n  ".join(looked))


def download_yolo_asset(filename: str, dest_dir: str | Path) -> Path:
    """Download an ultralytics release asset (e.g. "yolov8s-worldv2.pt") into `dest_dir`.

    Uses ultralytics' own `attempt_download_asset` (GitHub release of ultralytics/assets),
    with ovdet's download guard lifted for the duration. For `ovdet weights download`; nothing
    else in ovdet downloads YOLO files. Returns the file's path; raises `WeightsNotFoundError`
    when the download fails or ultralytics has no such asset.
    """
    ultralytics_offline()
    from ultralytics.utils.downloads import attempt_download_asset

    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(filename).name
    try:
        with downloads_allowed():
            got = Path(attempt_download_asset(str(target)))
    except Exception as exc:  # requests/urllib/ConnectionError types vary; report in one line
        raise WeightsNotFoundError(f"cannot download {filename}: {error_line(exc)}") from exc
    if not got.is_file():  # unknown names come back as the (missing) target path
        raise WeightsNotFoundError(
            f"cannot download {filename}: not an ultralytics release asset, or GitHub's release list was unreachable"
        )
    return got


def load_yolo_model(path: Path, device: torch.device):
    """Load an ultralytics checkpoint file as an eval-mode, fused fp32 `nn.Module` on `device`.

    Goes through ultralytics' `load_checkpoint` (legacy module renames, EMA weights, the
    ULTRALYTICS_SAFE_LOAD opt-in). The path must exist (see `find_yolo_weights`), so ultralytics'
    "download when missing" branch is never taken. A pickle: trusted files only.
    """
    ultralytics_offline()
    from ultralytics.nn.tasks import load_checkpoint

    path = Path(path)
    if path.suffix.lower() != ".pt":
        raise ConfigError(f"YOLO weights must be an ultralytics .pt checkpoint, got {path.name}")
    if not path.is_file():
        raise WeightsNotFoundError(f"YOLO weights file not found: {path}")
    try:
        model, _ = load_checkpoint(str(path.resolve()), device="cpu", fuse=False)
    except WeightsNotFoundError:
        raise
    except (OSError, RuntimeError, EOFError, TypeError, ValueError, AttributeError, ImportError) as exc:
        raise WeightsNotFoundError(f"cannot load YOLO checkpoint {path}: {error_line(exc)}") from exc
    model = model.float().fuse(verbose=False).eval().to(device)  # Conv+BN folded, as ultralytics predicts
    for p in model.parameters():
        p.requires_grad_(False)
    return model


__all__ = ["download_yolo_asset", "find_yolo_weights", "load_yolo_model"]
