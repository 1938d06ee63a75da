"""Zero-shot classification of whole images with CLIP (the classic CLIP use).

    clf = Classifier.from_pretrained("clip-b32")
    result = clf.classify("photo.jpg", ["doctor", "nurse"])
    result.top(1)   # [("nurse", 0.71)]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .defaults import DEFAULT_CLASSIFIER
from .cache import TextEmbeddingCache
from .clip import ClipModel
from .config import DetectorConfig
from .errors import ConfigError, OvdetWarning
from .io import load_image
from .text import VocabularyEncoder, resolve_templates, validate_vocabulary


ONE_CLASS_WARNING = (
    "a softmax over one class is always 1.000 and says nothing about the image; give two or more "
    "classes (e.g. {name!r} and 'something else')"
)


@dataclass(frozen=True)
class Classification:
    """probs: (C,) float32 softmax over the classes (sums to 1); class_names: the vocabulary."""

    probs: np.ndarray
    class_names: tuple[str, ...]

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.class_names[i], float(self.probs[i])) for i in order]

    def as_dict(self) -> dict[str, float]:
        return {n: float(p) for n, p in zip(self.class_names, self.probs)}


class Classifier:
    """CLIP image embedding vs. class-name text embeddings, softmax at CLIP's temperature."""

    def __init__(self, clip: ClipModel, templates: Sequence[str], text_cache: TextEmbeddingCache | None = None,
                 batch_size: int = 16):
        self.clip = clip
        self.batch_size = batch_size
        self.vocabulary = VocabularyEncoder(lambda p: self.clip.encode_text(p), clip.identity, templates, text_cache)

    @classmethod
    def from_config(cls, config: DetectorConfig) -> "Classifier":
        if config.backend != "clip":
            raise ConfigError(f"classification needs a CLIP model (a clip-* preset or CLIP checkpoint), got backend {config.backend!r}")
        cache = TextEmbeddingCache() if config.cache_text else None
        return cls(ClipModel.from_config(config), resolve_templates(config.templates), cache, batch_size=config.batch_size)

    @classmethod
    def from_pretrained(cls, model: str | Path = DEFAULT_CLASSIFIER, device: str | None = None, **overrides: Any) -> "Classifier":
        """A CLIP preset (clip-b32, clip-b16, clip-l14, or any clip-* preset), a CLIP checkpoint
        folder or hub id, or a YAML config; overrides as for `Detector.from_pretrained`."""
        from .detector import resolve_config

        return cls.from_config(resolve_config(model, device=device, **overrides))

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Any]) -> torch.Tensor:
        """Images (paths, PIL images or RGB arrays) -> (N, D) unit CLIP image embeddings, in
        passes of `batch_size`; independent of the vocabulary (`classify_embedded` scores them)."""
        embeds = []
        for start in range(0, len(images), self.batch_size):
            arrays = [load_image(im) for im in images[start : start + self.batch_size]]
            tensors = [torch.from_numpy(a).permute(2, 0, 1).to(self.clip.device) for a in arrays]
            # CLIP's own preprocessing: shorter side to the input size, centre crop
            pixels = self.clip.processor.image_processor(images=tensors, return_tensors="pt")["pixel_values"]
            embeds.append(self.clip.encode_pixels(pixels.to(self.clip.device)))
        return torch.cat(embeds) if embeds else torch.zeros(0, 0)

    @torch.inference_mode()
    def classify_embedded(self, image_embeds: torch.Tensor, classes: str | Iterable[str]) -> list[Classification]:
        """(N, D) embeddings of `embed_images` -> one `Classification` per image.

        Probabilities are a softmax over `classes`: relative to each other, so with a single
        class every image gets 1.0 (an `OvdetWarning` says so)."""
        return self._probabilities(image_embeds, validate_vocabulary(classes))

    @torch.inference_mode()
    def _probabilities(self, image_embeds: torch.Tensor, names: tuple[str, ...]) -> list[Classification]:
        """`classify_embedded` for an already validated vocabulary."""
        if len(names) == 1:
            # stacklevel 4: past this method, torch's inference_mode wrapper and the public method
            warnings.warn(ONE_CLASS_WARNING.format(name=names[0]), OvdetWarning, stacklevel=4)
        text = self.vocabulary(names).to(self.clip.device)
        probs = torch.softmax(self.clip.logit_scale * image_embeds @ text.T, dim=1).cpu().numpy()
        return [Classification(p.astype(np.float32), names) for p in probs]

    def classify_batch(self, images: Sequence[Any], classes: str | Iterable[str]) -> list[Classification]:
        """One `Classification` per image (path, PIL image or RGB array)."""
        names = validate_vocabulary(classes)  # a bad vocabulary fails before any image is encoded
        return self._probabilities(self.embed_images(images), names)

    def classify(self, image: Any, classes: str | Iterable[str]) -> Classification:
        return self.classify_batch([image], classes)[0]
