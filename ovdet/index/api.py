"""The Python face of the search index.

    import ovdet
    index = ovdet.Index("photos.lance", model="owlv2-b16")
    index.add(["photos/"])                    # encodes only new or changed images
    for hit in index.search("forklift", top=20):
        print(hit.path, hit.box, hit.score)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from .build import IndexReport, build_index, resolve_model
from .search import Hit, ImageHit, search_images, search_index
from .store import Store


class Index:
    """A LanceDB index of an image collection's regions at `db` (a folder or LanceDB URI).

    `model`: the detector to index with (default: the one the index was built with, else
    ovdet's default); `**overrides`: `DetectorConfig` fields (threshold, batch_size, ...).
    The detector is built on first use and kept."""

    def __init__(self, db: str | Path, model: str | None = None, device: str | None = None, **overrides: Any):
        self.uri = str(db)
        self.model, self.device, self.overrides = model, device, overrides
        self.detector = None

    def get_detector(self):
        """The Detector the index is searched with (built once)."""
        if self.detector is None:
            from ..detector import Detector

            _, config = resolve_model(self.uri, self.model, Store.read_manifest(self.uri), self.device, self.overrides)
            self.detector = Detector.from_config(config)
        return self.detector

    def add(self, paths: str | Sequence[str], *, regions: int | None = None, dtype: str | None = None,
            progress: bool = False, ann_min_rows: int | None = None, ann_kind: str = "ivf_sq") -> IndexReport:
        """Index image files, folders or globs: new or changed images are encoded, the rest
        left alone. `regions` per image and the vector `dtype` ("fp16", "fp32") are fixed when
        the index is created; from `ann_min_rows` regions on an ANN index of `ann_kind`
        ("ivf_sq", "ivf_pq") is built. Returns what was done (`IndexReport`: `encoded`,
        `unchanged`, ...)."""
        sources = [paths] if isinstance(paths, (str, Path)) else list(paths)
        return build_index(self.uri, [str(s) for s in sources], self.model, regions=regions, dtype=dtype,
                           progress=progress, ann_min_rows=ann_min_rows, ann_kind=ann_kind,
                           detector=self.get_detector())

    def search(self, query: str | Iterable[Any], top: int = 20, threshold: float | None = None,
               negatives: str | Iterable[str] | None = None, ann: bool | None = None) -> list[Hit]:
        """Hits for `query`: class names ("forklift", "forklift,pallet") and/or
        `ovdet.Example`s, best first (see `ovdet.index.search.search_index`)."""
        return search_index(Store.open(self.uri), self.get_detector(), query, top=top, threshold=threshold,
                            negatives=negatives, ann=ann)

    def search_images(self, query: str | Iterable[Any], top: int = 20) -> list[ImageHit]:
        """Whole images ranked by the cosine of their stored image vector to the query (coarse;
        `search` finds and scores the regions)."""
        return search_images(Store.open(self.uri), self.get_detector(), query, top=top)

    def __len__(self) -> int:
        return Store.open(self.uri).count()[0]
