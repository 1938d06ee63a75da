"""What a detector is asked to find -> its class-embedding table.

Class names, `Example`s and negative prompts are validated once (`resolve_classes`, whose
`ResolvedClasses` the `Detector` takes as it is: a server validates a request's vocabulary
before queueing it, and the detector does not repeat the checks), then embedded by
`ClassTable`: text through the template ensemble, exemplars through the backend's image tower,
rows in the order (classes..., negatives...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .cache import ExemplarEmbeddingCache, TextEmbeddingCache
from .errors import ExemplarError
from .exemplars import Example, ExemplarEncoder, Vocabulary, blend, resolve_vocabulary
from .learned import apply_learned
from .text import VocabularyEncoder, ensemble, validate_vocabulary

if TYPE_CHECKING:  # an ONNX export's tables are numpy arrays, without torch
    import torch


def parse_negatives(negatives: str | Iterable[str]) -> tuple[str, ...]:
    """Negative prompts as a comma-separated string or list -> stripped, non-empty names."""
    items = negatives.split(",") if isinstance(negatives, str) else negatives
    return tuple(n.strip() for n in items if n.strip())


@dataclass(frozen=True)
class ResolvedClasses:
    """A validated vocabulary and its negative prompts (None: the detector's configured ones).

    Hashable, so a batcher can group requests by it."""

    vocabulary: Vocabulary
    negatives: tuple[str, ...] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.vocabulary.names

    def with_negatives(self, negatives: str | Iterable[str]) -> "ResolvedClasses":
        """The same classes with `negatives`; a negative may not repeat a class."""
        negs = parse_negatives(negatives)
        if negs:
            validate_vocabulary(list(self.names) + list(negs))  # duplicates across both are an error
        return replace(self, negatives=negs)


def resolve_classes(classes: str | Iterable[str | Example] | ResolvedClasses,
                    negatives: str | Iterable[str] | None = None) -> ResolvedClasses:
    """Validate `classes` (names and/or Examples; `VocabularyError` / `ExemplarError`) and
    `negatives` (None: left to the detector's config). An already resolved vocabulary is
    returned as it is, with `negatives` if they are given."""
    resolved = classes if isinstance(classes, ResolvedClasses) else ResolvedClasses(resolve_vocabulary(classes))
    return resolved if negatives is None else resolved.with_negatives(negatives)


class ClassTable:
    """Embeds resolved vocabularies for one backend: (C + K, D) unit rows, C classes then K
    negatives, torch tensors on the backend's device (numpy arrays for an ONNX export).

    `text` (the template-ensemble encoder with its caches) and `exemplars` (None when the
    backend's head reads text only, as YOLO-World's) are the encoders themselves."""

    def __init__(self, backend: Any, templates: Sequence[str], text_cache: TextEmbeddingCache | None,
                 exemplar_cache: ExemplarEmbeddingCache | None, example_weight: float, backend_name: str,
                 numpy: bool = False):
        self.backend, self.numpy = backend, numpy
        self.example_weight, self.backend_name = example_weight, backend_name
        # resolved through the backend at call time, so tests and tools may wrap encode_text. A
        # backend that reads class names its own way (the DINO family's prompts, OmDet's
        # per-class cache) supplies its own encoder: names -> the table its `predict` takes; one
        # whose classes are not single vectors (SAM 3: token features per prompt) says how its
        # template prompts form the class table, and takes the vocabulary whole
        own = getattr(backend, "vocabulary_encoder", None)
        self.text = own(templates, text_cache) if callable(own) else VocabularyEncoder(
            lambda p: self.backend.encode_text(p), backend.identity, templates, text_cache, numpy=numpy,
            combine=getattr(backend, "ensemble_prompts", ensemble))
        self.prompts = getattr(backend, "vocabulary_prompts", None)
        self.exemplars: ExemplarEncoder | None = None
        if hasattr(backend, "embed_exemplars"):
            self.exemplars = ExemplarEncoder(lambda i, b: self.backend.embed_exemplars(i, b),
                                             backend.exemplar_identity, exemplar_cache)

    def _on_device(self, table: Any) -> Any:
        return table if self.numpy else table.to(self.backend.device)

    def text_rows(self, names: Sequence[str]) -> torch.Tensor:
        """(N, D) text embeddings of `names`; a name the checkpoint carries a learned embedding
        for (`ovdet.learned`, prompt tuning) gets that row instead of its template ensemble."""
        return apply_learned(names, self.text(tuple(names)), getattr(self.backend, "learned_classes", None))

    def names_table(self, names: Sequence[str]) -> torch.Tensor:
        """(N, D) embeddings of text names (already validated)."""
        return self._on_device(self.text_rows(names))

    def embed(self, vocab: Vocabulary, negatives: tuple[str, ...] = ()) -> torch.Tensor:
        """(C + K, D): the vocabulary's classes, then the K negative prompts (for a backend
        with `vocabulary_prompts`, with Examples or negatives: what that returns)."""
        if self.prompts is not None and (vocab.has_examples or negatives):
            texts = vocab.text_names + negatives
            return self.prompts(self.names_table(texts) if texts else None, vocab, negatives)
        if not vocab.has_examples:
            return self.names_table(vocab.names + negatives)
        import torch

        if any(e.negative for e in vocab.all_examples):
            raise ExemplarError(f"backend {self.backend_name!r} cannot take negative examples (SAM 3 can): "
                                "drop ':negative' / negative=True")
        if self.exemplars is None:
            raise ExemplarError(f"backend {self.backend_name!r} cannot take image exemplars (its head reads text "
                                "embeddings only): use an OWL or CLIP model for classes shown by example")
        device = self.backend.device
        texts = vocab.text_names + negatives
        text = self.text_rows(texts).to(device) if texts else torch.zeros(0, device=device)
        shown = self.exemplars(vocab.all_examples).to(device)
        n = len(vocab.text_names)
        classes = blend(vocab, text[:n], shown, self.example_weight)
        return torch.cat([classes, text[n:]]) if negatives else classes


__all__ = ["ClassTable", "ResolvedClasses", "parse_negatives", "resolve_classes"]
