"""Dataset writers, one module per format; each `write(images, classes, folder, **options)`.

`FORMATS` maps a --format name to its module; `export` writes each requested format into a
temporary sibling folder and moves it into place when complete, so an export cut short never
leaves a half-written dataset where a finished one is expected.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from ...errors import OvdetError
from ..dataset import LabelledImage
from . import coco, labelstudio, voc, yolo
from .coco import MASK_FORMATS

FORMATS = {"coco": coco, "yolo": yolo, "voc": voc, "labelstudio": labelstudio}


class FormatError(OvdetError, ValueError):
    """An unknown or empty --format list."""


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """"coco,yolo" (or a list) -> ("coco", "yolo"); unknown names are an error."""
    names = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    names = [n for n in names if n]
    if not names:
        raise FormatError(f"--format: give at least one of {', '.join(FORMATS)}")
    for n in names:
        if n not in FORMATS:
            raise FormatError(f"--format: unknown format {n!r} (choose from {', '.join(FORMATS)})")
    return tuple(dict.fromkeys(names))


def export(images: Sequence[LabelledImage], classes: Sequence[str], out: Path, formats: Sequence[str],
           **options) -> dict[str, str]:
    """Write `formats` under `out/<format>/`; returns {format: folder}. Options (copy_images,
    model_version, labelstudio_root, mask_format) go to the writers that take them."""
    written = {}
    for name in formats:
        final = Path(out) / name
        tmp = Path(out) / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        FORMATS[name].write(images, list(classes), tmp, **options)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        written[name] = str(final)
    remove_dropped_formats(Path(out), formats)
    return written


def remove_dropped_formats(out: Path, formats: Sequence[str]) -> list[str]:
    """Remove the format folders the previous run wrote (listed in its report.json, still there
    when this is called) that this run no longer asks for: report.json will not list them, so a
    resumed run with fewer --formats leaves no stale dataset behind. Nothing else is touched."""
    import json

    try:
        previous = json.loads((out / "report.json").read_text(encoding="utf-8"))["run"]["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    dropped = [name for name in previous if name in FORMATS and name not in formats and (out / name).is_dir()]
    for name in dropped:
        shutil.rmtree(out / name)
    return dropped
