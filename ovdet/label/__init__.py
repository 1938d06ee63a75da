"""`ovdet label`: auto-labelling image folders into training datasets, locally or on Ray.

    from ovdet.label import label, Ontology
    report = label("photos/", {"car": ["car", "automobile"]}, "dataset/", formats="coco,yolo")

Modules: sources (what SOURCE names), ontology (classes <- prompts), work (the unit of work
`paths -> records`, shared by both engines), shards (finished work on disk, resume),
dataset (names, splits), exporters/ (one module per format), report (report.json,
review.jpg), ray_engine (Ray Data), api (`label`), command (the CLI).
The API is loaded on first use, so `ovdet --help` does not import torch.
"""

from __future__ import annotations

from .ontology import Ontology, OntologyClass, OntologyError

__all__ = ["label", "Ontology", "OntologyClass", "OntologyError"]


def __getattr__(name: str):
    if name == "label":
        from .api import label

        return label
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
