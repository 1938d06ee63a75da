"""The vocabulary of an evaluation: the annotation file's category names (LVIS's "traffic_light"
as "traffic light"), or names given by the user (--classes-from), one per category."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import OvdetError
from ..files import read_json


class ClassesFileError(OvdetError, ValueError):
    """A --classes-from file does not name every evaluated category."""


def prompt_name(name: str) -> str:
    """A category name as text for the model: LVIS writes "traffic_light" for "traffic light"."""
    return " ".join(name.replace("_", " ").split())


def check_same_dataset(path: Path, categories: Sequence[dict], names: Sequence[str]) -> None:
    """Another dataset's annotations share ids but not meanings (LVIS id 1 is "aerosol can",
    COCO's is "person"): names taken by id from an annotation file that renames most of the
    evaluated categories would score the model on the wrong classes, silently."""
    def norm(name: str) -> str:
        return prompt_name(name).casefold()

    renamed = [(c, n) for c, n in zip(categories, names) if norm(c["name"]) != norm(n)]
    if 2 * len(renamed) > len(categories):
        cat, name = renamed[0]
        raise ClassesFileError(
            f"{path} renames {len(renamed)} of {len(categories)} categories by id (id {cat['id']}: "
            f"{cat['name']!r} -> {name!r}): it looks like another dataset's annotations; to rename "
            "on purpose, pass an {id: name} JSON or a text file"
        )


def vocabulary(categories: Sequence[dict], classes_from: str | Path | None = None) -> list[str]:
    """Class names for the evaluated categories (dicts with "id" and "name", sorted by id).

    `classes_from` replaces the dataset's names:
      - a JSON annotation file (COCO/LVIS): its category names, matched by id (an error when
        it renames most categories: another dataset's file, whose ids mean other things);
      - a JSON object {"<id>": "name"} or a JSON list of names (one per category, by id order);
      - a text file: one name per line, in ascending category-id order.
    """
    if classes_from is None:
        return [prompt_name(cat["name"]) for cat in categories]
    path = Path(classes_from)
    if path.suffix.lower() == ".json":
        raw = read_json(path, "classes file", error=ClassesFileError)
        annotations = isinstance(raw, dict) and isinstance(raw.get("categories"), list)
        if annotations:
            by_id = {c.get("id"): c.get("name") for c in raw["categories"] if isinstance(c, dict)}
        elif isinstance(raw, dict):
            by_id = {}
            for key, value in raw.items():
                try:
                    by_id[int(key)] = value
                except ValueError:
                    raise ClassesFileError(f"{path}: keys must be category ids, got {key!r}") from None
        elif isinstance(raw, list):
            names = raw
            by_id = None
        else:
            raise ClassesFileError(f"{path}: expected annotations, an {{id: name}} object or a list of names")
        if by_id is not None:
            names = []
            for cat in categories:
                if not isinstance(by_id.get(cat["id"]), str):
                    raise ClassesFileError(f"{path} has no name for category id {cat['id']} ({cat['name']!r})")
                names.append(by_id[cat["id"]])
        if annotations:
            check_same_dataset(path, categories, names)
    else:
        from ..text import load_vocabulary  # the same text format as every other command

        names = load_vocabulary(path)
    if len(names) != len(categories) or not all(isinstance(n, str) for n in names):
        raise ClassesFileError(
            f"{path} gives {len(names)} name(s) for {len(categories)} categories: "
            "list one name per category, in id order"
        )
    return [prompt_name(n) for n in names]
