"""The groups CSV of `ovdet audit`: which group each image belongs to."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from ..errors import OvdetError


class GroupsFileError(OvdetError, ValueError):
    """The groups CSV is unreadable, malformed, or does not match the images."""


def _norm(path: str) -> str:
    return Path(os.path.normpath(path)).as_posix()


def read_groups(path: str | Path, image_paths: Sequence[str], root: str | Path | None = None) -> dict[str, str]:
    """Read a groups CSV (header with columns `image` and `group`; others are ignored) and
    return {image path: group} for exactly `image_paths`.

    An entry names an image by its path as listed, its path relative to `root` (the images
    folder) or to the CSV's folder or the working directory, or its bare file name when that
    is unique among the images. Every image needs exactly one row and every row must name one
    of the images; otherwise `GroupsFileError` names the first mismatches.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets write a BOM
            reader = csv.DictReader(fh)
            header = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
            if "image" not in header or "group" not in header:
                raise GroupsFileError(f"groups file {path} needs a header with columns image,group "
                                      f"(found: {','.join(reader.fieldnames or []) or 'nothing'})")
            rows = [(i + 2, (r.get(header["image"]) or "").strip(), (r.get(header["group"]) or "").strip())
                    for i, r in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GroupsFileError(f"cannot read groups file {path}: {exc}") from exc

    names = [Path(p).name for p in image_paths]
    aliases: dict[str, str] = {}
    for p, name in zip(image_paths, names):
        aliases[_norm(p)] = p
        if root is not None:
            aliases[_norm(os.path.relpath(p, root))] = p
        if names.count(name) == 1:
            aliases.setdefault(name, p)
    absolute = {os.path.realpath(p): p for p in image_paths}

    def lookup(entry: str) -> str | None:
        if _norm(entry) in aliases:
            return aliases[_norm(entry)]
        bases = [""] if os.path.isabs(entry) else [str(path.parent), os.getcwd()]
        for base in bases:
            hit = absolute.get(os.path.realpath(os.path.join(base, entry)))
            if hit is not None:
                return hit
        return None

    groups: dict[str, str] = {}
    first_row: dict[str, int] = {}
    unknown: list[str] = []
    for line, entry, group in rows:
        if not entry:
            raise GroupsFileError(f"groups file {path}, line {line}: empty image name")
        if not group:
            raise GroupsFileError(f"groups file {path}, line {line}: image {entry} has no group")
        image = lookup(entry)
        if image is None:
            unknown.append(entry)
            continue
        if image in groups:
            raise GroupsFileError(f"groups file {path}: image {entry} appears twice (lines {first_row[image]} and {line})")
        groups[image], first_row[image] = group, line
    missing = [Path(p).name for p in image_paths if p not in groups]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} image(s) have no row ({preview(missing)})")
        if unknown:
            parts.append(f"{len(unknown)} row(s) name no image given ({preview(unknown)})")
        raise GroupsFileError(f"groups file {path} does not match the images: {'; '.join(parts)}")
    return groups


def preview(items: Sequence[str], k: int = 3) -> str:
    """The first `k` items, comma-separated, with "..." when there are more (for error lines)."""
    return ", ".join(items[:k]) + (", ..." if len(items) > k else "")


