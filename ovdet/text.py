"""Vocabularies (the user's class names) and prompt templates."""

from __future__ import annotations

from typing import Iterable, Sequence

from .errors import VocabularyError


def parse_classes(text: str) -> list[str]:
    """Split a comma-separated class list ("bus, person,stroller") into names.

    Names are stripped; validation (empty, duplicates) is `validate_vocabulary`'s job.
    """
    return [part.strip() for part in text.split(",")]


def validate_vocabulary(classes: str | Iterable[str]) -> tuple[str, ...]:
    """Return the class names as a tuple, or raise `VocabularyError` with a precise message.

    A single string is read as a comma-separated list. Names are stripped of surrounding
    white space; an empty list, an empty name or a duplicate (case-insensitive) is an error,
    because each would silently change what the scores mean.
    """
    names = parse_classes(classes) if isinstance(classes, str) else [str(c).strip() for c in classes]
    if not names or names == [""]:
        raise VocabularyError("empty vocabulary: give at least one class name, e.g. --classes \"cat,dog\"")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:
            raise VocabularyError(f"class name #{i + 1} is empty (check for a stray comma): {names}")
        key = name.casefold()
        if key in seen:
            raise VocabularyError(
                f"duplicate class name {name!r} (#{seen[key] + 1} and #{i + 1}); each class must be named once"
            )
        seen[key] = i
    return tuple(names)


def apply_template(template: str, names: Sequence[str]) -> list[str]:
    """Fill a prompt template such as "a photo of a {}." with each class name."""
    if "{}" not in template:
        raise VocabularyError(f"prompt template {template!r} must contain '{{}}' where the class name goes")
    return [template.replace("{}", name) for name in names]
