"""Vocabularies (the user's class names) and prompt templates."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from .cache import TextEmbeddingCache
from .errors import VocabularyError, first_line

if TYPE_CHECKING:
    import torch  # imported where used: vocabulary checks stay light for the CLI


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


# Built-in template sets. "photo" is ovdet's own ensemble of photo-style phrasings: sizes,
# framing and image quality vary in real photos, and averaging over them makes the class
# embedding less sensitive to any one wording.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "none": ("{}",),
    "single": ("a photo of a {}.",),
    "photo": (
        "a photo of a {}.",
        "a photo of the {}.",
        "a photo of one {}.",
        "a photo of a small {}.",
        "a photo of a large {}.",
        "a close-up photo of a {}.",
        "a cropped photo of the {}.",
        "a blurry photo of a {}.",
        "a bright photo of a {}.",
        "a dark photo of the {}.",
        "a {} in the scene.",
        "there is a {} in this picture.",
    ),
}


def resolve_templates(spec: str) -> tuple[str, ...]:
    """Templates from a set name ("single", "photo", "none"), one literal template containing
    "{}", or a text file with one template per line ('#' starts a comment)."""
    if spec in TEMPLATE_SETS:
        return TEMPLATE_SETS[spec]
    if "{}" in spec:
        return (spec,)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise VocabularyError(
            f"templates {spec!r}: not a built-in set ({', '.join(TEMPLATE_SETS)}), not a template with '{{}}', "
            "and not a file"
        )
    lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()]
    templates = tuple(l for l in lines if l and not l.startswith("#"))
    if not templates:
        raise VocabularyError(f"template file {path} has no templates")
    for t in templates:
        if "{}" not in t:
            raise VocabularyError(f"template {t!r} in {path} must contain '{{}}' where the class name goes")
    return templates


def prompts_for(templates: Sequence[str], names: Sequence[str]) -> list[str]:
    """All T x C prompts, template-major: prompts[t * C + c] = templates[t] with names[c]."""
    return [p for t in templates for p in apply_template(t, names)]


def ensemble(embeds: torch.Tensor, num_templates: int) -> torch.Tensor:
    """(T*C, D) template-major prompt embeddings -> (C, D) class embeddings: the mean of the
    unit-normalised template embeddings, renormalised to unit length. A numpy array in (the
    torch-free ONNX path) gives a float32 numpy array out."""
    if isinstance(embeds, np.ndarray):
        t_c, d = embeds.shape
        e = embeds.astype(np.float32)
        unit = (e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)).reshape(num_templates, -1, d)
        mean = unit.mean(axis=0)
        return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)
    import torch.nn.functional as F

    t_c, d = embeds.shape
    unit = F.normalize(embeds.float(), dim=-1).reshape(num_templates, t_c // num_templates, d)
    return F.normalize(unit.mean(dim=0), dim=-1)


def load_vocabulary(path: str | Path) -> list[str]:
    """Class names from a file: a COCO/LVIS annotation JSON (its `categories`, by id; LVIS
    underscores become spaces) or plain text, one name per line ('#' starts a comment)."""
    from .files import read_json

    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_json(path, "vocabulary file", error=VocabularyError)
        try:
            cats = sorted(data["categories"], key=lambda c: c["id"])
            return [str(c["name"]).replace("_", " ") for c in cats]
        except (KeyError, TypeError) as exc:
            raise VocabularyError(f"{path} is not a COCO/LVIS annotation file with 'categories' (id, name): {exc}") from exc
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"cannot read vocabulary file {path}: {first_line(exc)}") from exc
    return [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]


class VocabularyEncoder:
    """Class names -> (C, D) unit class embeddings (template ensemble), computed once per
    vocabulary: kept in memory (the last `memory_size` vocabularies) and, with a cache, on disk.

    `encode` is a text tower: (N,) prompts -> (N, D); `identity` names it in cache keys.
    `numpy`: the tower returns numpy arrays (ONNX exports), so cached embeddings are loaded
    as numpy too; otherwise torch tensors. `combine`: (T*C, ...) template-major prompt
    embeddings, T -> the class table (default `ensemble`; SAM 3 keeps each template's prompt).
    """

    def __init__(
        self,
        encode: Callable[[list[str]], torch.Tensor],
        identity: str,
        templates: Sequence[str],
        cache: TextEmbeddingCache | None = None,
        memory_size: int = 16,
        numpy: bool = False,
        combine: Callable[[torch.Tensor, int], torch.Tensor] = ensemble,
    ):
        self.encode = encode
        self.identity = identity
        self.templates = tuple(templates)
        self.cache = cache
        self.memory_size = memory_size
        self.numpy = numpy
        self.combine = combine
        self._memory: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()

    def __call__(self, names: Sequence[str]) -> torch.Tensor:
        key = tuple(names)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        disk_key = self.cache.key(self.identity, self.templates, key) if self.cache is not None else None
        embeds = self.cache.load(disk_key, numpy=self.numpy) if disk_key is not None else None
        if embeds is None:
            embeds = self.combine(self.encode(prompts_for(self.templates, key)), len(self.templates))
            if disk_key is not None:
                self.cache.save(disk_key, embeds)
        self._memory[key] = embeds
        while len(self._memory) > self.memory_size:
            self._memory.popitem(last=False)
        return embeds
