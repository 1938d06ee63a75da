"""Placing source images in an export: a symbolic link, or a byte copy (never re-encoded)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def place_image(source: str, target: Path, copy: bool) -> None:
    """Link (absolute target) or copy `source` to `target`; the bytes are the camera's.

    Links keep a million-image export cheap; `copy` makes the export self-contained (to move
    it to another machine). Where symbolic links are not allowed (some Windows setups) the
    file is copied."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.symlink(os.path.abspath(source), target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)
