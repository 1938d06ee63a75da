"""Ontology: the classes of the dataset to write, each named by one or more prompts.

    car: [car, automobile, a sedan]          # several prompts, one class
    person: {prompts: [person, pedestrian], threshold: 0.2}
    bicycle: bicycle                         # one prompt

or, with negatives (prompts scored with the others; a box whose best match is one is dropped):

    classes:
      car: [car, automobile]
    negatives: [toy car, car poster]

The detector sees the flat list of prompts; each detection is mapped back to its class, kept
if its score passes the class's threshold, and boxes of one class found by different prompts
are merged by NMS within the class. Category ids follow the ontology's order.

Pure Python and YAML: the CLI validates an ontology before it imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import OvdetError


class OntologyError(OvdetError, ValueError):
    """An ontology file or dict is empty, malformed, or names a class without prompts."""


@dataclass(frozen=True)
class OntologyClass:
    """One output class: its name, the prompts that find it, and an optional score cut."""

    name: str
    prompts: tuple[str, ...]
    threshold: float | None = None


@dataclass(frozen=True)
class Ontology:
    """Classes in category order (category id = index + 1 in COCO, the index in YOLO)."""

    classes: tuple[OntologyClass, ...]
    negatives: tuple[str, ...] = ()

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_classes(cls, text: str | Sequence[str]) -> "Ontology":
        """--classes "car,person": each class is its own single prompt."""
        names = [n.strip() for n in text.split(",")] if isinstance(text, str) else [str(n).strip() for n in text]
        if not any(names):
            raise OntologyError('empty ontology: give at least one class, e.g. --classes "car,person"')
        return cls.from_dict({n: [n] for n in names} if all(names) else _stray_comma(names))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "ontology") -> "Ontology":
        """{class: prompts | prompt | {prompts, threshold}} or {classes: {...}, negatives: [...]}."""
        if not isinstance(data, Mapping):
            raise OntologyError(f"{where}: expected a mapping of class names to prompts, got {type(data).__name__}")
        negatives: Any = ()
        if "classes" in data and isinstance(data["classes"], Mapping):
            extra = sorted(set(data) - {"classes", "negatives"})
            if extra:
                raise OntologyError(f"{where}: unknown top-level key(s) {', '.join(map(repr, extra))} "
                                    "(expected 'classes' and optionally 'negatives')")
            negatives = data.get("negatives") or ()
            data = data["classes"]
        if not data:
            raise OntologyError(f"empty ontology in {where}: name at least one class, e.g. `car: [car, automobile]`")
        classes = [_parse_class(str(name), spec, where) for name, spec in data.items()]
        onto = cls(tuple(classes), _prompt_list(negatives, f"{where}: negatives"))
        onto.validate(where)
        return onto

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Ontology":
        from ..files import read_yaml

        data = read_yaml(path, "ontology", error=OntologyError)
        if data is None:
            raise OntologyError(f"empty ontology in {path}: name at least one class, e.g. `car: [car, automobile]`")
        return cls.from_dict(data, where=str(path))

    @classmethod
    def coerce(cls, value: "Ontology | Mapping | str | Path | Sequence[str]") -> "Ontology":
        """What the Python API accepts: an Ontology, a dict, a YAML path, or class names."""
        if isinstance(value, Ontology):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, Path) or (isinstance(value, str) and value.lower().endswith((".yaml", ".yml"))):
            return cls.from_yaml(value)
        return cls.from_classes(value)

    # -- checks and views -------------------------------------------------------------------------
    def validate(self, where: str = "ontology") -> None:
        """Distinct class names and prompts (case-insensitive): one prompt in two classes, or a
        negative that is also a prompt, would make the class of a box ambiguous."""
        seen_names: set[str] = set()
        owner: dict[str, str] = {}
        for c in self.classes:
            if c.name.casefold() in seen_names:
                raise OntologyError(f"{where}: class {c.name!r} is named twice")
            seen_names.add(c.name.casefold())
            for p in c.prompts:
                key = p.casefold()
                if key in owner:
                    other = owner[key]
                    what = "twice in class" if other == c.name else f"in classes {other!r} and"
                    raise OntologyError(f"{where}: prompt {p!r} appears {what} {c.name!r}")
                owner[key] = c.name
        for n in self.negatives:
            if n.casefold() in owner:
                raise OntologyError(f"{where}: {n!r} is both a negative and a prompt of class {owner[n.casefold()]!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def prompts(self) -> tuple[str, ...]:
        """Every prompt, class by class: what the detector is asked for."""
        return tuple(p for c in self.classes for p in c.prompts)

    @property
    def prompt_class(self) -> tuple[int, ...]:
        """Class index of each entry of `prompts`."""
        return tuple(i for i, c in enumerate(self.classes) for _ in c.prompts)

    def thresholds(self, default: float) -> tuple[float, ...]:
        """Score cut per class: its own, else `default` (the detector's threshold)."""
        return tuple(default if c.threshold is None else c.threshold for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form (round-trips through `from_dict`); also the resume fingerprint."""
        classes: dict[str, Any] = {}
        for c in self.classes:
            classes[c.name] = {"prompts": list(c.prompts)} if c.threshold is None else {
                "prompts": list(c.prompts), "threshold": c.threshold}
        return {"classes": classes, "negatives": list(self.negatives)}


def _stray_comma(names: list[str]):
    i = names.index("")
    raise OntologyError(f"class #{i + 1} is empty (check for a stray comma): {', '.join(names)}")


def _prompt_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise OntologyError(f"{where}: expected a prompt or a list of prompts, got {type(value).__name__}")
    prompts = []
    for p in value:
        if not isinstance(p, (str, int, float)) or not str(p).strip():
            raise OntologyError(f"{where}: empty or non-text prompt {p!r}")
        prompts.append(str(p).strip())
    return tuple(prompts)


def _parse_class(name: str, spec: Any, where: str) -> OntologyClass:
    name = name.strip()
    if not name:
        raise OntologyError(f"{where}: a class has an empty name")
    threshold = None
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"prompts", "threshold"})
        if unknown:
            raise OntologyError(f"{where}: class {name!r} has unknown key(s) {', '.join(map(repr, unknown))} "
                                "(expected 'prompts' and optionally 'threshold')")
        threshold = spec.get("threshold")
        spec = spec.get("prompts")
        if threshold is not None:
            try:
                threshold = float(threshold)
            except (TypeError, ValueError):
                raise OntologyError(f"{where}: class {name!r}: threshold must be a number, got {threshold!r}") from None
            if not (0.0 <= threshold <= 1.0) or math.isnan(threshold):
                raise OntologyError(f"{where}: class {name!r}: threshold must be in [0, 1], got {threshold}")
    if spec is None or (isinstance(spec, (list, tuple)) and not spec):
        raise OntologyError(f"{where}: class {name!r} has no prompts; give at least one, e.g. `{name}: [{name}]`")
    return OntologyClass(name, _prompt_list(spec, f"{where}: class {name!r}"), threshold)
