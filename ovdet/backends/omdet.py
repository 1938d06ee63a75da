"""OmDet-Turbo through transformers: a Swin image tower and hybrid encoder that do not depend on
the vocabulary, then a decoder that reads per-class CLIP text embeddings and a task prompt.

Split in two phases as OWL is (`encode_images` once per image, `score` per vocabulary), so a
server batches images whatever their vocabularies. The text side replaces transformers'
built-in 100-entry LRU (`language_cache_class`): class embeddings go through ovdet's caches
(`OmDetTextEncoder`: memory, and disk when `cache_text` is on), one text-tower pass per class
never seen before; the task prompt ("Detect a, b, c.", as the processor writes it) is encoded
once per vocabulary.

Scores follow transformers' `post_process_grounded_object_detection`: sigmoid of the decoder's
class logits for every (query, class) pair, of which only the best `num_queries` pairs of an
image are kept (the rest score 0), then the Detector's threshold, class-wise NMS (0.5 in the
preset, as transformers) and `multi_label` selection. ovdet clips boxes to the image before
NMS (transformers after), which can change NMS for boxes that leave the image.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..boxes import clip_to_image, cxcywh_to_xyxy, scale_normalized
from ..errors import OvdetError, VocabularyError
from ..text import apply_template
from ..weights import load_checkpoint
from .base import RegionScores


@dataclass(frozen=True)
class OmDetTable:
    """A vocabulary for OmDet-Turbo: class_embeds (C, D) fp32 (the text tower's projected
    end-of-text token per class), task (T, 1, D') token features of the task prompt and
    task_mask (1, T) int64."""

    class_embeds: torch.Tensor
    task: torch.Tensor
    task_mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.class_embeds)

    def to(self, device) -> "OmDetTable":
        return OmDetTable(self.class_embeds.to(device), self.task.to(device), self.task_mask.to(device))


@dataclass(frozen=True)
class OmDetImageFeatures:
    """One image's vocabulary-free features: the hybrid encoder's multi-scale maps, each
    (1, D, h_l, w_l) fp32; image_size (height, width) of the original image."""

    states: tuple[torch.Tensor, ...]
    image_size: tuple[int, int]


class OmDetTextEncoder:
    """Class names -> `OmDetTable`. Class embeddings: memory (every class seen, keyed by its
    prompt) then disk (`TextEmbeddingCache`, one file per class) then the text tower, in one
    batch for the new classes only; task features: the last `memory_size` vocabularies."""

    def __init__(self, backend: "OmDetBackend", templates: Sequence[str], cache=None, memory_size: int = 16):
        if len(templates) != 1:
            raise VocabularyError(f"omdet-turbo reads one phrase per class: give one template (e.g. --templates '{{}}'), "
                                  f"not {len(templates)}")
        self.backend, self.templates, self.cache = backend, tuple(templates), cache
        self.classes: dict[str, torch.Tensor] = {}
        self.memory_size = memory_size
        self._tables: OrderedDict[tuple[str, ...], OmDetTable] = OrderedDict()

    def __call__(self, names: Sequence[str]) -> OmDetTable:
        key = tuple(names)
        if key in self._tables:
            self._tables.move_to_end(key)
            return self._tables[key]
        prompts = apply_template(self.templates[0], key)
        missing = [p for p in dict.fromkeys(prompts) if p not in self.classes]
        if self.cache is not None:
            for p in list(missing):
                found = self.cache.load(self._disk_key(p))
                if found is not None:
                    self.classes[p] = found.to(self.backend.device)
                    missing.remove(p)
        if missing:
            for p, e in zip(missing, self.backend.encode_text(missing)):
                self.classes[p] = e
                if self.cache is not None:
                    self.cache.save(self._disk_key(p), e)
        task, mask = self.backend.encode_task(prompts)
        table = self._tables[key] = OmDetTable(torch.stack([self.classes[p] for p in prompts]), task, mask)
        while len(self._tables) > self.memory_size:
            self._tables.popitem(last=False)
        return table

    def _disk_key(self, prompt: str) -> str:
        return self.cache.key(f"omdet-class|{self.backend.identity}", self.templates, [prompt])


class OmDetBackend:
    """Wraps `OmDetTurboForObjectDetection` and its processor."""

    numpy_arrays = False

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype = torch.float32, identity: str = ""):
        self.model = model.eval().to(device)
        self.processor = processor
        self.device, self.dtype = device, dtype
        self.identity = identity or model.config.name_or_path
        self.num_queries = int(model.config.num_queries)
        # the Swin and CLIP towers in `dtype`; the hybrid encoder, decoder and heads in fp32
        model.vision_backbone.to(dtype)
        model.language_backbone.to(dtype)
        self.text_passes = 0  # classes run through the text tower: what tests count

    @classmethod
    def load(cls, path: str | Path, device: torch.device, dtype: torch.dtype) -> "OmDetBackend":
        from transformers import AutoModelForZeroShotObjectDetection

        model, processor, identity = load_checkpoint(Path(path), AutoModelForZeroShotObjectDetection, "OmDet-Turbo")
        return cls(model, processor, device, dtype, identity=identity)

    @property
    def name(self) -> str:
        return "omdet-turbo"

    def vocabulary_encoder(self, templates: Sequence[str], text_cache=None) -> OmDetTextEncoder:
        return OmDetTextEncoder(self, templates, text_cache)

    def tokens(self, texts: Sequence[str]):
        # as OmDetTurboProcessor tokenises: 77 tokens, padded to the full length
        return self.processor.tokenizer(list(texts), padding="max_length", truncation=True, max_length=77,
                                        return_tensors="pt").to(self.device)

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N,) class prompts -> (N, D) fp32 class embeddings (the text tower's
        `encode_type="class"` output, as transformers caches it)."""
        self.text_passes += len(prompts)
        ids = self.tokens(prompts)["input_ids"]
        return self.model.language_backbone(ids, encode_type="class").float()

    @torch.inference_mode()
    def encode_task(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The processor's default task prompt "Detect a, b, c." -> (T, 1, D) fp32 token
        features and (1, T) mask (truncated to its length, as the model does)."""
        tok = self.tokens([f"Detect {', '.join(prompts)}."])
        feats, mask = self.model.language_backbone(tok["input_ids"], mask=tok["attention_mask"], encode_type="task")
        return feats.float(), mask

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray], boxes=None) -> list[OmDetImageFeatures]:
        """The Swin tower and hybrid encoder, once per image whatever the vocabulary (images
        the processor resizes to one size run as one batch)."""
        if boxes is not None:
            raise OvdetError("omdet-turbo predicts its own boxes; to score given boxes use a CLIP preset (backend: clip)")
        pixels = [self.processor.image_processor(images=[im], return_tensors="pt")["pixel_values"] for im in images]
        out: list[OmDetImageFeatures | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(pixels):
            groups.setdefault(tuple(p.shape), []).append(i)
        for index in groups.values():
            batch = torch.cat([pixels[i] for i in index]).to(self.device, self.dtype)
            maps = [m.float() for m in self.model.vision_backbone(batch)]
            states = self.model.encoder(maps, return_dict=True).extracted_states
            for j, i in enumerate(index):
                out[i] = OmDetImageFeatures(tuple(s[j : j + 1] for s in states), images[i].shape[:2])
        return out

    @torch.inference_mode()
    def score(self, features: Sequence[OmDetImageFeatures], table: OmDetTable) -> list[RegionScores]:
        """The decoder against a vocabulary, for features of `encode_images`."""
        if not isinstance(table, OmDetTable):
            raise OvdetError("omdet-turbo reads class names, not embeddings (image exemplars are not supported)")
        results: list[RegionScores | None] = [None] * len(features)
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(features):
            groups.setdefault(tuple(tuple(s.shape) for s in f.states), []).append(i)
        for index in groups.values():
            n = len(index)
            states = [torch.cat([features[i].states[level] for i in index]) for level in range(len(features[index[0]].states))]
            table = table.to(self.device)
            out = self.model.decoder(states, table.class_embeds[:, None].expand(-1, n, -1),
                                     table.task.expand(-1, n, -1), table.task_mask.expand(n, -1), return_dict=True)
            logits, coords = out.decoder_classes[-1].float(), out.decoder_coords[-1].float()
            for j, i in enumerate(index):
                h, w = features[i].image_size
                results[i] = RegionScores(boxes=clip_to_image(scale_normalized(cxcywh_to_xyxy(coords[j]), w, h), h, w),
                                          scores=self.top_pairs(torch.sigmoid(logits[j])), raw=logits[j], image_size=(h, w))
        return results

    def top_pairs(self, scores: torch.Tensor) -> torch.Tensor:
        """(Q, C) scores with all but the best `num_queries` (query, class) pairs set to 0, as
        transformers' post-processing keeps only those before its threshold and NMS."""
        flat = scores.flatten()
        if flat.numel() <= self.num_queries:
            return scores
        keep = torch.zeros_like(flat)
        top = flat.topk(self.num_queries).indices
        keep[top] = flat[top]
        return keep.view_as(scores)

    def predict(self, images: Sequence[np.ndarray], table: OmDetTable, boxes=None) -> list[RegionScores]:
        return self.score(self.encode_images(images, boxes), table)


__all__ = ["OmDetBackend", "OmDetImageFeatures", "OmDetTable", "OmDetTextEncoder"]
