"""SOURCE arguments of `ovdet label` -> the sorted list of image files to label.

A SOURCE is an image file, a folder (searched recursively), a glob pattern ("**" allowed) or a
.txt file listing one path or glob per line (relative lines are relative to the list's folder;
a line starting with '#' is a comment). Paths are made absolute, so a resumed run matches its images from any
working directory, and sorted, so the list (and everything derived from it: chunks, splits,
export names) does not depend on the order the file system or the user gave them in.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ImageReadError
from ..io import IMAGE_EXTENSIONS


def _folder_images(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .ovdet-label, ...
        found.extend(os.path.join(root, f) for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return found


def _list_file(path: Path, depth: int) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageReadError(f"cannot read image list {path}: {exc}") from exc
    entries = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):  # whole-line comments only: '#' may be in a file name
            entries.append(line if os.path.isabs(line) else str(path.parent / line))
    return _expand(entries, depth + 1)


def _expand(sources: Iterable[str], depth: int = 0) -> list[str]:
    if depth > 4:
        raise ImageReadError("image lists nest more than 4 deep (a list naming itself?)")
    out: list[str] = []
    for src in sources:
        src = os.path.expanduser(str(src))
        path = Path(src)
        if path.is_dir():
            out.extend(_folder_images(path))
        elif path.is_file() and path.suffix.lower() == ".txt":
            out.extend(_list_file(path, depth))
        elif path.is_file():
            out.append(src)
        elif glob.has_magic(src):
            matches = [m for m in glob.glob(src, recursive=True) if os.path.isfile(m)]
            if not matches:
                raise ImageReadError(f"no files match {src}")
            out.extend(m for m in matches if Path(m).suffix.lower() in IMAGE_EXTENSIONS)
        else:
            raise ImageReadError(f"image source not found: {src}")
    return out


def expand_sources(sources: str | Path | Sequence[str | Path]) -> list[str]:
    """Absolute, de-duplicated, sorted image paths. Raises `ImageReadError` (one line) for a
    source that does not exist or when no image is found at all. Files named explicitly are
    kept whatever their extension (an unreadable one is skipped and reported later)."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    paths = sorted({os.path.abspath(p) for p in _expand(sources)})
    if not paths:
        raise ImageReadError(f"no images found in {' '.join(map(str, sources))}")
    return paths
