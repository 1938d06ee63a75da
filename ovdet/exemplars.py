"""Image exemplars (visual prompts): classes shown by example, beside classes named in text.

    from ovdet import Detector, Example
    det = Detector.from_pretrained("owlv2-b16")
    det.detect("shelf.jpg", ["bottle", Example("our logo", "logo.png"),
                             Example("crack", "wall.jpg", box=(40, 10, 90, 60))])

This module holds what is common to every backend: the `Example` value, how a mixed vocabulary
of strings and Examples becomes classes (`resolve_vocabulary`, `blend`), the `--example` /
`--examples` syntax, and `ExemplarEncoder`, which caches exemplar embeddings in memory and on
disk keyed by the image's pixels, the box and the model. How a backend turns an exemplar into an
embedding lives in the backend (`embed_exemplars(images, boxes)`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from .cache import ExemplarEmbeddingCache
from .errors import ExemplarError, ImageReadError
from .io import load_image
from .text import parse_classes, validate_vocabulary

if TYPE_CHECKING:
    import torch

# a box may pass the image's edge by this many pixels (rounded annotations) and is clipped;
# further out it is an error, since the user probably measured it on another image
BOX_TOLERANCE = 1.0
ENCODE_BATCH = 8  # exemplar images per image-tower pass
NEGATIVE_SUFFIX = ":negative"  # --example NAME=PATH:x1,y1,x2,y2:negative

Box = tuple[float, float, float, float]


def check_box(box: Any, where: str) -> Box:
    """4 finite numbers x1, y1, x2, y2 with x2 > x1 and y2 > y1, else `ExemplarError`."""
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise ExemplarError(f"{where}: box must be 4 numbers x1, y1, x2, y2, got {box!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ExemplarError(f"{where}: box must be 4 numbers x1, y1, x2, y2 (finite), got {box!r}")
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        raise ExemplarError(f"{where}: empty box {list(values)} (need x2 > x1 and y2 > y1, in pixels)")
    return values


def fit_box(box: Box | None, height: int, width: int, where: str) -> Box | None:
    """The box clipped to a `height` x `width` image; None when it covers the whole image (the
    whole image is then the exemplar). `ExemplarError` when it lies outside the image."""
    if box is None:
        return None
    x1, y1, x2, y2 = box
    t = BOX_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        raise ExemplarError(f"{where}: box {list(box)} is outside the exemplar image ({width} x {height} pixels)")
    fitted = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if fitted[2] - fitted[0] <= 0 or fitted[3] - fitted[1] <= 0:
        raise ExemplarError(f"{where}: box {list(box)} is outside the exemplar image ({width} x {height} pixels)")
    return None if fitted == (0.0, 0.0, float(width), float(height)) else fitted


@dataclass(frozen=True, eq=False)
class Example:
    """One image exemplar of a class.

    name: the class it shows. Several Examples with one name form one class; an Example whose
        name is also a text class blends with it (`example_weight`).
    image: a path, PIL image or RGB array (anything `ovdet.io.load_image` reads).
    box: x1, y1, x2, y2 in that image's pixels; None = the whole image.
    negative: the box shows what the class is NOT (SAM 3's negative box prompts; other
        backends refuse it).

    The image is read and fingerprinted once, on first use (later changes to an array are not
    seen by the same Example).
    """

    name: str
    image: Any
    box: Box | None = None
    negative: bool = False
    _identity: list = field(default_factory=list, init=False, repr=False, compare=False)  # memo

    def __post_init__(self) -> None:
        name = self.name.strip() if isinstance(self.name, str) else ""
        if not name:
            raise ExemplarError(f"an exemplar needs a non-empty class name, got {self.name!r}")
        object.__setattr__(self, "name", name)
        if self.image is None:
            raise ExemplarError(f"exemplar {name!r} has no image")
        if self.box is not None:
            object.__setattr__(self, "box", check_box(self.box, f"exemplar {name!r}"))

    @property
    def source(self) -> str:
        """The image, in words (paths as given)."""
        if isinstance(self.image, (str, Path)):
            return str(self.image)
        shape = getattr(self.image, "shape", None) or getattr(self.image, "size", None)
        return f"<{type(self.image).__name__} {tuple(shape) if shape is not None else ''}>"

    def load(self) -> tuple[np.ndarray, Box | None]:
        """(RGB uint8 (H, W, 3) pixels, box clipped to them or None for the whole image)."""
        where = f"exemplar {self.name!r} ({self.source})"
        try:
            pixels = load_image(self.image)
        except ImageReadError as exc:
            raise ExemplarError(f"{where}: cannot read the image: {exc.reason}") from None  # `where` names it
        return pixels, fit_box(self.box, *pixels.shape[:2], where)

    def identity(self) -> tuple[str, Box | None]:
        """(sha256 of the decoded pixels and their shape, fitted box), computed once: what the
        embedding depends on besides the model. Raises `ExemplarError` for a bad exemplar."""
        if not self._identity:
            pixels, box = self.load()
            self._identity.append((pixels_digest(pixels), box))
        return self._identity[0]

    def cache_key(self, model_identity: str) -> str:
        """Hex key of this exemplar's embedding under a model (its exemplar identity)."""
        digest, box = self.identity()
        blob = json.dumps([model_identity, digest, None if box is None else list(box)])
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def record(self) -> dict:
        """JSON-able description (name, image, box, and negative when set) for logs and run headers."""
        out = {"name": self.name, "image": self.source, "box": None if self.box is None else list(self.box)}
        return {**out, "negative": True} if self.negative else out


def pixels_digest(pixels: np.ndarray) -> str:
    """sha256 of an image's decoded pixels and shape: what identifies an exemplar's image."""
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()


# -- vocabularies mixing text and exemplars --------------------------------------------------
@dataclass(frozen=True)
class Vocabulary:
    """Classes of a mixed vocabulary, in order of first appearance.

    names: (C,) class names (the first spelling seen).
    text: (C,) whether class c has a text prompt (its name).
    examples: (C,) the exemplars of class c (empty for text-only classes).
    """

    names: tuple[str, ...]
    text: tuple[bool, ...]
    examples: tuple[tuple[Example, ...], ...]

    @property
    def text_names(self) -> tuple[str, ...]:
        return tuple(n for n, t in zip(self.names, self.text) if t)

    @property
    def all_examples(self) -> tuple[Example, ...]:
        return tuple(e for group in self.examples for e in group)

    @property
    def has_examples(self) -> bool:
        return any(self.examples)


def resolve_vocabulary(classes: str | Iterable[str | Example]) -> Vocabulary:
    """Class names and/or `Example`s -> `Vocabulary`.

    A string is a comma-separated list of names. Text names are validated as ever (empty or
    duplicate names are errors); Examples sharing a name (case-insensitively) form one class, and
    join the text class of that name.
    """
    if isinstance(classes, (str, Example)):
        classes = parse_classes(classes) if isinstance(classes, str) else [classes]
    items = list(classes)
    texts = [c for c in items if not isinstance(c, Example)]
    if texts or not items:
        validate_vocabulary([str(t) for t in texts])  # the usual errors, e.g. for an empty list
    names: list[str] = []
    has_text: list[bool] = []
    groups: list[list[Example]] = []
    index: dict[str, int] = {}
    for item in items:
        name = item.name if isinstance(item, Example) else str(item).strip()
        key = name.casefold()
        if key not in index:
            index[key] = len(names)
            names.append(name)
            has_text.append(False)
            groups.append([])
        c = index[key]
        if isinstance(item, Example):
            groups[c].append(item)
        else:
            has_text[c] = True
    for name, text, group in zip(names, has_text, groups):
        if not text and all(e.negative for e in group):
            raise ExemplarError(f"class {name!r} has only negative examples: name it as text too, or give a positive example")
    return Vocabulary(tuple(names), tuple(has_text), tuple(tuple(g) for g in groups))


def validate_classes(classes: str | Iterable[str | Example]) -> tuple[str | Example, ...]:
    """A vocabulary as `Detector.detect_batch` takes it, checked now (`resolve_vocabulary`'s
    errors), as a tuple: a comma-separated string is split into names, Examples are kept."""
    if isinstance(classes, (str, Example)):
        classes = parse_classes(classes) if isinstance(classes, str) else [classes]
    items = tuple(c if isinstance(c, Example) else str(c).strip() for c in classes)
    resolve_vocabulary(items)
    return items


def blend(vocabulary: Vocabulary, text_embeds: torch.Tensor, example_embeds: torch.Tensor, weight: float) -> torch.Tensor:
    """Class embeddings of a mixed vocabulary.

    Args:
        text_embeds: (T, D) unit embeddings of `vocabulary.text_names`, in order.
        example_embeds: (E, D) unit embeddings of `vocabulary.all_examples`, in order.
        weight: `example_weight` in [0, 1]: a class with text and exemplars gets
            normalise((1 - weight) * text + weight * exemplars).
    Returns:
        (C, D) unit embeddings. A class's exemplars count as the mean of their unit
        embeddings, renormalised (as templates are ensembled).
    """
    import torch
    import torch.nn.functional as F

    rows = []
    t = e = 0
    for has_text, group in zip(vocabulary.text, vocabulary.examples):
        text = None
        if has_text:
            text, t = text_embeds[t].float(), t + 1
        shown = None
        if group:
            shown = F.normalize(example_embeds[e : e + len(group)].float().mean(dim=0), dim=-1)
            e += len(group)
        if text is not None and shown is not None:
            rows.append(F.normalize((1.0 - weight) * text + weight * shown.to(text.device), dim=-1))
        else:
            rows.append(text if text is not None else shown)
    return torch.stack([r.to(rows[0].device) for r in rows])


def vocabulary_record(classes: Iterable[str | Example]) -> list:
    """A JSON-able form of a vocabulary: names as strings, Examples as records with the sha256
    of their pixels (so a changed exemplar image reads as another vocabulary)."""
    return [{**c.record(), "pixels": c.identity()[0]} if isinstance(c, Example) else str(c) for c in classes]


# -- the --example / --examples syntax --------------------------------------------------------
def parse_example(text: str) -> Example:
    """`NAME=PATH` or `NAME=PATH:x1,y1,x2,y2` (the --example flag) -> `Example`; a trailing
    `:negative` makes it a negative example (what the class is not; SAM 3).

    The box is the part after the last ':' when it holds commas, so paths with a drive letter
    (C:\\...) still parse."""
    negative = text.endswith(NEGATIVE_SUFFIX)
    text = text[: -len(NEGATIVE_SUFFIX)] if negative else text
    if "=" not in text:
        raise ExemplarError(f"--example {text!r}: missing '=' (expected NAME=PATH or NAME=PATH:x1,y1,x2,y2)")
    name, rest = text.split("=", 1)
    if not name.strip():
        raise ExemplarError(f"--example {text!r}: empty class name before '='")
    path, box = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and "," in tail:
        path, box = head, tail.split(",")
        if len(box) != 4:
            raise ExemplarError(f"--example {text!r}: the box after ':' must be x1,y1,x2,y2 (4 numbers)")
    if not path.strip():
        raise ExemplarError(f"--example {text!r}: no image path after '='")
    return Example(name, path.strip(), box, negative=negative)


def load_examples_file(path: str | Path) -> list[Example]:
    """Exemplars from a YAML file: `NAME: [{image: PATH, box: [x1, y1, x2, y2]}, ...]`.

    An entry may also be a bare PATH (the whole image), and a class with one exemplar may give
    it without the list; `negative: true` makes an entry a negative example (SAM 3). Relative
    image paths are relative to the YAML file's folder."""
    from .files import read_yaml

    path = Path(path)
    data = read_yaml(path, "examples file", error=ExemplarError)
    if not isinstance(data, dict) or not data:
        raise ExemplarError(f"examples file {path} must map class names to exemplars: "
                            "NAME: [{image: PATH, box: [x1, y1, x2, y2]}, ...]")
    out = []
    for name, entries in data.items():
        where = f"{path}: {name!r}"
        entries = entries if isinstance(entries, list) else [entries]
        if not entries:
            raise ExemplarError(f"{where} lists no exemplars")
        for entry in entries:
            if isinstance(entry, str):
                entry = {"image": entry}
            if not isinstance(entry, dict) or "image" not in entry or set(entry) - {"image", "box", "negative"}:
                raise ExemplarError(f"{where}: each exemplar is {{image: PATH, box: [x1, y1, x2, y2]}} "
                                    f"(box optional, negative: true optional), got {entry!r}")
            image = Path(str(entry["image"])).expanduser()
            image = image if image.is_absolute() else path.parent / image
            out.append(Example(str(name), str(image), entry.get("box"), negative=entry.get("negative") is True))
    return out


# -- embeddings, cached ------------------------------------------------------------------------
class ExemplarEncoder:
    """Examples -> (E, D) unit embeddings, each computed once per model: kept in memory (the
    last `memory_size`) and, with a cache, on disk, keyed by `Example.cache_key(identity)`.

    `embed` is the backend's `embed_exemplars`: (N,) RGB uint8 images + (N,) boxes (xyxy pixels
    or None for the whole image) -> (N, D) unit embeddings. `identity` names the model (and
    whatever else the embedding depends on, e.g. the region mode) in cache keys.
    """

    def __init__(self, embed: Callable[[list[np.ndarray], list[Box | None]], torch.Tensor], identity: str,
                 cache: ExemplarEmbeddingCache | None = None, memory_size: int = 512):
        self.embed = embed
        self.identity = identity
        self.cache = cache
        self.memory_size = memory_size
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()

    def clear_memory(self) -> None:
        """Forget the embeddings kept in memory (the disk cache stays)."""
        self._memory.clear()

    def __call__(self, examples: Sequence[Example]) -> torch.Tensor:
        """(E,) Examples -> (E, D) float32 unit embeddings (CPU), in order."""
        import torch

        keys = [e.cache_key(self.identity) for e in examples]
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, Example] = {}
        for key, example in zip(keys, examples):
            if key in found or key in missing:
                continue
            if key in self._memory:
                self._memory.move_to_end(key)
                found[key] = self._memory[key]
                continue
            stored = self.cache.load(key) if self.cache is not None else None
            if stored is not None:
                found[key] = stored
            else:
                missing[key] = example
        if missing:
            from .progress import progress_bar

            todo = list(missing.items())
            bar = progress_bar(total=len(todo), desc="exemplars", unit="exemplar", enabled=len(todo) > ENCODE_BATCH)
            for start in range(0, len(todo), ENCODE_BATCH):
                chunk = todo[start : start + ENCODE_BATCH]
                loaded = [example.load() for _, example in chunk]
                embeds = self.embed([p for p, _ in loaded], [b for _, b in loaded]).float().cpu()
                for (key, _), row in zip(chunk, embeds):
                    found[key] = row
                    if self.cache is not None:
                        self.cache.save(key, row)
                bar.update(len(chunk))
            bar.close()
        for key, row in found.items():
            self._memory[key] = row
            self._memory.move_to_end(key)
        while len(self._memory) > self.memory_size:
            self._memory.popitem(last=False)
        return torch.stack([found[k] for k in keys])


def check_examples(classes: Iterable[Any]) -> None:
    """Read every Example in `classes` now (unreadable images, boxes outside them), so a command
    fails before it loads a model."""
    for item in classes:
        if isinstance(item, Example):
            item.identity()


__all__ = ["Example", "ExemplarEncoder", "Vocabulary", "blend", "check_examples", "load_examples_file",
           "parse_example", "pixels_digest", "resolve_vocabulary", "validate_classes", "vocabulary_record"]
