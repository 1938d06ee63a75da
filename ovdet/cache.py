"""On-disk caches of embeddings: vocabularies (a 1,203-class vocabulary is embedded once) and
image exemplars.

Text keys hash everything the embeddings depend on: the text tower's identity (checkpoint path,
file sizes and modification times), the templates and the class names, in order. Exemplar keys
are made by `ovdet.exemplars` (image bytes, box, model identity). Values are plain .npy files
(no pickles), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch


def default_cache_dir() -> Path:
    """$OVDET_CACHE, else ~/.cache/ovdet (XDG_CACHE_HOME respected)."""
    if os.environ.get("OVDET_CACHE"):
        return Path(os.environ["OVDET_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "ovdet"


class EmbeddingCache:
    """key (hex digest) -> float32 embedding array, one .npy file per key in a subfolder of
    the cache directory."""

    subfolder = "embeddings"

    def __init__(self, directory: Path | None = None):
        self.directory = (directory or default_cache_dir()) / self.subfolder

    def load(self, key: str, numpy: bool = False) -> torch.Tensor | np.ndarray | None:
        """The (C, D) float32 embeddings under `key` (a torch tensor, or a numpy array with
        `numpy`), or None when absent or unreadable."""
        path = self.directory / f"{key}.npy"
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # absent, or a damaged file: recompute
            return None
        if numpy:
            return array
        import torch

        return torch.from_numpy(array)

    def save(self, key: str, embeds: torch.Tensor | np.ndarray) -> None:
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".npy", dir=self.directory)
            with os.fdopen(fd, "wb") as fh:
                array = embeds if isinstance(embeds, np.ndarray) else embeds.detach().float().cpu().numpy()
                np.save(fh, array.astype(np.float32), allow_pickle=False)
            os.replace(tmp, self.directory / f"{key}.npy")
        except OSError:  # a read-only or full disk only costs a recomputation next time
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


class TextEmbeddingCache(EmbeddingCache):
    """(identity, templates, names) -> (C, D) float32 embeddings on disk."""

    subfolder = "text"

    @staticmethod
    def key(identity: str, templates: Sequence[str], names: Sequence[str]) -> str:
        blob = json.dumps([identity, list(templates), list(names)], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ExemplarEmbeddingCache(EmbeddingCache):
    """Exemplar key (see `ovdet.exemplars.Example.cache_key`) -> (D,) float32 unit embedding."""

    subfolder = "exemplars"
