"""SAM 3 (`Sam3Model`, and `Sam3LiteTextModel` whose parts are the same) as a detector: every
instance of each named concept, with masks, many concepts per image in one pass.

Per image, the vision encoder runs once (`encode_images`, vocabulary-free, so `ovdet serve`
shares it across requests); per vocabulary, the text encoder runs once (ovdet's text cache
holds its token features); then all prompts go through the DETR encoder and decoder as one
batch (`ovdet.backends.sam3_heads`, chunked to a memory budget) and masks are made only for the
detections kept (`ovdet.backends.sam3_masks`). Results equal transformers' `Sam3Model` called
once per class followed by `post_process_instance_segmentation`.

A class's "embedding" here is not one vector: it is its prompt's projected token features
(L = 32 tokens, D wide) with the attention mask as one more channel: (L, D + 1) per prompt.
Several templates are not averaged (token features of different phrasings do not add up):
each is a prompt of its own whose queries all count for the class (NMS then keeps one box per
object). Scores are SAM 3's own: sigmoid(query logit) x sigmoid(presence logit).

Example prompts (`ovdet.Example`, positive or `negative=True`) are SAM 3's box prompts:
boxes pooled from the features of the image being searched, so an Example must be a box on
that very image (`ExemplarError` otherwise); a class shown only by examples gets SAM 3's
"visual" text prompt, as `Sam3Processor` gives it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from ..boxes import clip_to_image
from ..errors import ExemplarError, OvdetError, WeightsNotFoundError
from ..exemplars import Example, Vocabulary, pixels_digest
from ..weights import load_checkpoint, locate
from .base import RegionScores
from .owlv2_resize import reduce_to
from .sam3_heads import HeadOutput, Sam3Vision, decode_masks, mask_chunk, prompt_chunk, run_heads
from .sam3_masks import Sam3Masks

HUGE_PIXELS = 2**24  # above this, images are first reduced in bounded memory (as for OWL-ViT)
TEXT_LENGTH = 32  # Sam3Processor pads every prompt to 32 tokens
PROMPT_MEMORY = 2048  # prompts whose token features stay in memory (33 KB each at full size)
VISUAL_PROMPT = "visual"  # Sam3Processor's text for a prompt given by boxes only
# a class candidate whose box overlaps a negative prompt's candidate this much takes that
# candidate's score in the negative's column (a better negative match then drops it)
NEGATIVE_IOU = 0.5
GATED_REPOS = ("facebook/sam3",)
GATED = "accept the licence on https://huggingface.co/{repo} and log in (`hf auth login`), then " \
        "`ovdet weights download {name}`; or put the checkpoint folder in weights/{name}/"


@dataclass(frozen=True)
class Sam3Prompts:
    """A vocabulary as SAM 3 prompts: text (R, L, D + 1) token features + mask channel per
    prompt; columns (R,) the score column (class, then negative prompt) of each prompt;
    width: C + K columns, classes: C; examples: prompt row -> its `Example`s (box prompts)."""

    text: torch.Tensor
    columns: tuple[int, ...]
    width: int
    classes: int
    examples: dict = field(default_factory=dict)

    @classmethod
    def of_table(cls, table: torch.Tensor) -> "Sam3Prompts":
        """From a (C, T, L, D + 1) text table (T templates per class)."""
        c, t = table.shape[:2]
        return cls(table.reshape(c * t, *table.shape[2:]), tuple(np.repeat(np.arange(c), t).tolist()), c, c)


@dataclass(frozen=True)
class Sam3ImageFeatures:
    """One image's vision features (what `Sam3Backend.encode_images` returns); image_size:
    (height, width); pixels: the image itself, fingerprinted only when an Example needs it."""

    vision: Sam3Vision
    image_size: tuple[int, int]
    pixels: np.ndarray = field(repr=False)
    memo: list = field(default_factory=list, repr=False, compare=False)

    def digest(self) -> str:
        if not self.memo:
            self.memo.append(pixels_digest(self.pixels))
        return self.memo[0]


class Sam3Backend:
    """Wraps a transformers `Sam3Model` (or `Sam3LiteTextModel`) and its `Sam3Processor`."""

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype = torch.float32, identity: str = ""):
        self.model = model.eval().to(device=device, dtype=dtype)
        self.processor = processor
        self.device, self.dtype = device, dtype
        self.identity = f"sam3|{identity or model.config.name_or_path}|{str(dtype).replace('torch.', '')}"
        self.num_queries = model.config.detr_decoder_config.num_queries
        self.visual: torch.Tensor | None = None
        self.prompt_memory: OrderedDict[str, torch.Tensor] = OrderedDict()  # prompt -> (L, D + 1)

    @classmethod
    def load(cls, path: str | Path, device: torch.device, dtype: torch.dtype) -> "Sam3Backend":
        """Load a checkpoint folder (hub snapshot or `save_pretrained` output)."""
        from transformers import AutoModel

        model, processor, identity = load_checkpoint(Path(path), AutoModel, "SAM 3")
        if not hasattr(model, "detr_decoder"):
            raise OvdetError(f"{path} holds a {type(model).__name__}, not a SAM 3 detector (Sam3Model)")
        return cls(model, processor, device, dtype, identity=identity)

    # -- text ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N,) prompts -> (N, L, D + 1) float32: the projected token features SAM 3's DETR reads
        (`get_text_features(...).pooler_output`), then the attention mask as a last channel.

        Prompts are encoded once per backend (the last `PROMPT_MEMORY` kept): a vocabulary
        that adds a class to one seen before encodes only the new class (the class table
        caches whole vocabularies, on disk too)."""
        new = list(dict.fromkeys(p for p in prompts if p not in self.prompt_memory))
        if new:
            tok = self.processor.tokenizer(new, padding="max_length", max_length=TEXT_LENGTH,
                                           truncation=True, return_tensors="pt").to(self.device)
            feats = self.model.get_text_features(input_ids=tok["input_ids"],
                                                 attention_mask=tok["attention_mask"]).pooler_output
            rows = torch.cat([feats.float(), tok["attention_mask"][..., None].float()], dim=-1)
            self.prompt_memory.update(zip(new, rows))
        for p in prompts:
            self.prompt_memory.move_to_end(p)
        out = torch.stack([self.prompt_memory[p] for p in prompts])
        while len(self.prompt_memory) > PROMPT_MEMORY:
            self.prompt_memory.popitem(last=False)
        return out

    @staticmethod
    def ensemble_prompts(embeds: torch.Tensor, num_templates: int) -> torch.Tensor:
        """(T*C, L, D + 1) template-major prompts -> (C, T, L, D + 1): every template stays a
        prompt of its own (the class table's shape for SAM 3)."""
        t_c = embeds.shape[0]
        return embeds.reshape(num_templates, t_c // num_templates, *embeds.shape[1:]).transpose(0, 1).contiguous()

    def vocabulary_prompts(self, table: torch.Tensor | None, vocab: Vocabulary, negatives: tuple[str, ...]) -> Sam3Prompts:
        """Prompts of a vocabulary with Examples or negative prompts: `table` (N, T, L, D + 1) holds the text
        classes then the negatives (`vocab.text_names + negatives`); a class with Examples
        gets them as box prompts, on the text of its name or SAM 3's "visual" prompt."""
        rows, columns, examples = [], [], {}
        t = 0
        for c, (has_text, shown) in enumerate(zip(vocab.text, vocab.examples)):
            if has_text:
                prompts, t = table[t], t + 1
            else:
                if self.visual is None:
                    self.visual = self.encode_text([VISUAL_PROMPT])
                prompts = self.visual
            for prompt in prompts:
                if shown:
                    examples[len(rows)] = shown
                rows.append(prompt)
                columns.append(c)
        for k in range(len(negatives)):
            for prompt in table[t + k]:
                rows.append(prompt)
                columns.append(len(vocab.names) + k)
        return Sam3Prompts(torch.stack(rows).to(self.device), tuple(columns), len(vocab.names) + len(negatives),
                           len(vocab.names), examples)

    # -- images -------------------------------------------------------------------------------
    def input_size(self) -> tuple[int, int]:
        size = self.processor.image_processor.size
        return int(size["height"]), int(size["width"])

    def decode_size(self, height: int, width: int) -> tuple[int, int] | None:
        """Twice the input per axis (the image is stretched to the square input): JPEG draft."""
        s_h, s_w = self.input_size()
        needed = (min(height, 2 * s_h), min(width, 2 * s_w))
        return needed if needed != (height, width) else None

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> (B, 3, S, S) pixel values (Sam3ImageProcessor, from uint8
        tensors on the device; huge images first reduced to twice the input in bounded memory)."""
        s_h, s_w = self.input_size()
        images = [reduce_to(im, 2 * s_h, 2 * s_w) if im.shape[0] * im.shape[1] > HUGE_PIXELS else im for im in images]
        tensors = [torch.from_numpy(im if im.flags.writeable else im.copy()).permute(2, 0, 1).to(self.device) for im in images]
        return self.processor.image_processor(images=tensors, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray], boxes=None) -> list[Sam3ImageFeatures]:
        """The vision encoder, once per image whatever the vocabulary."""
        if boxes is not None:
            raise OvdetError("SAM 3 finds its own boxes; to score given boxes use a CLIP preset (backend: clip)")
        if not len(images):
            return []
        out = self.model.get_vision_features(pixel_values=self.preprocess(images))
        levels, positions = out.fpn_hidden_states[:-1], out.fpn_position_encoding[:-1]
        return [Sam3ImageFeatures(Sam3Vision(tuple(l[i: i + 1] for l in levels), tuple(p[i: i + 1] for p in positions)),
                                  im.shape[:2], im)
                for i, im in enumerate(images)]

    # -- scoring ------------------------------------------------------------------------------
    def box_prompt(self, examples: Sequence[Example], features: Sam3ImageFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples -> (1, N, 4) normalised cxcywh boxes and (1, N) labels on this image."""
        h, w = features.image_size
        boxes, labels = [], []
        for example in examples:
            digest, box = example.identity()
            if digest != features.digest():
                raise ExemplarError(f"SAM 3 example {example.name!r} ({example.source}) is not the image searched: SAM 3 "
                                    "reads example boxes from that image's own features; give boxes on each image")
            x1, y1, x2, y2 = box if box is not None else (0.0, 0.0, float(w), float(h))
            boxes.append([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h])
            labels.append(0 if example.negative else 1)
        return (torch.tensor([boxes], dtype=self.dtype, device=self.device),
                torch.tensor([labels], dtype=torch.int64, device=self.device))

    def run_image(self, features: Sam3ImageFeatures, prompts: Sam3Prompts) -> tuple[list[HeadOutput], list]:
        """Every prompt on one image: text-only prompts in chunks, box prompts one by one."""
        vision = features.vision
        itemsize = torch.finfo(self.dtype).bits // 8
        text = prompts.text.to(self.device)
        feats, mask = text[..., :-1].to(self.dtype), text[..., -1] > 0.5
        plain = [r for r in range(len(prompts.columns)) if r not in prompts.examples]
        step = prompt_chunk(self.model, vision, itemsize)
        runs: list[tuple[list[int], HeadOutput]] = []
        for start in range(0, len(plain), step):
            rows = plain[start: start + step]
            runs.append((rows, run_heads(self.model, vision, feats[rows], mask[rows])))
        for row, shown in prompts.examples.items():
            boxes, labels = self.box_prompt(shown, features)
            runs.append(([row], run_heads(self.model, vision, feats[row: row + 1], mask[row: row + 1], boxes, labels)))
        return [out for _, out in runs], [rows for rows, _ in runs]

    def score(self, features: Sequence[Sam3ImageFeatures], class_embeds: torch.Tensor | Sam3Prompts) -> list[RegionScores]:
        """Candidates per image: each prompt's Q queries, scored for its class (P = R x Q rows,
        prompt-major in the order the prompts ran), with masks made on selection."""
        prompts = class_embeds if isinstance(class_embeds, Sam3Prompts) else Sam3Prompts.of_table(class_embeds)
        return [self.image_candidates(f, prompts) for f in features]

    def predict(self, images: Sequence[np.ndarray], class_embeds: torch.Tensor | Sam3Prompts, boxes=None) -> list[RegionScores]:
        return self.score(self.encode_images(images, boxes), class_embeds)

    def image_candidates(self, features: Sam3ImageFeatures, prompts: Sam3Prompts) -> RegionScores:
        outputs, order = self.run_image(features, prompts)
        h, w = features.image_size
        q = self.num_queries
        boxes = torch.cat([o.boxes.float() for o in outputs]).reshape(-1, 4)
        boxes = clip_to_image(boxes * boxes.new_tensor([w, h, w, h]), h, w)
        logits = torch.cat([o.logits.float() for o in outputs])  # (R, Q)
        presence = torch.cat([o.presence.float() for o in outputs])  # (R, 1)
        native = (logits.sigmoid() * presence.sigmoid()).reshape(-1)
        columns = torch.tensor([prompts.columns[r] for rows in order for r in rows], device=boxes.device)
        column = columns.repeat_interleave(q)  # (P,) each candidate's column
        scores = torch.zeros(len(native), prompts.width, device=boxes.device)
        raw = torch.zeros_like(scores)
        scores[torch.arange(len(native)), column] = native
        raw[torch.arange(len(native)), column] = logits.reshape(-1)
        self.fill_negatives(scores, boxes, column, prompts.classes)
        masks = Sam3Masks(lambda levels, state, queries: decode_masks(self.model, levels, state, queries),
                          features.vision.levels, [(sum(len(r) for r in order[:i]), o.state) for i, o in enumerate(outputs)],
                          q, mask_chunk(features.vision, torch.finfo(self.dtype).bits // 8))
        return RegionScores(boxes=boxes, scores=scores, raw=raw, image_size=(h, w), masks=masks)

    @staticmethod
    def fill_negatives(scores: torch.Tensor, boxes: torch.Tensor, column: torch.Tensor, classes: int) -> None:
        """Negative prompts' columns (>= `classes`) for class candidates: the best score of that
        negative's candidates overlapping them (IoU >= NEGATIVE_IOU), so that the score policy
        drops a class candidate that a negative prompt matches better (`drop_negatives`)."""
        is_class = column < classes
        if bool(is_class.all()):
            return
        ours, theirs = torch.nonzero(is_class).flatten(), torch.nonzero(~is_class).flatten()
        overlap = box_iou(boxes[ours], boxes[theirs]) >= NEGATIVE_IOU  # (class cands, negative cands)
        for k in range(classes, scores.shape[1]):
            of_k = column[theirs] == k
            best = (overlap & of_k[None]) * scores[theirs, k][None]
            scores[ours, k] = best.max(dim=1).values if best.shape[1] else 0.0


def build_sam3(cfg, device: torch.device, dtype: torch.dtype) -> Sam3Backend:
    """The backend of a `sam3` config; a gated hub checkpoint that is not here says how to get it."""
    try:
        located = locate(cfg.name, cfg.weights)
    except WeightsNotFoundError as exc:
        if cfg.weights in GATED_REPOS:
            name = cfg.name or cfg.weights.split("/")[-1]
            raise WeightsNotFoundError(f"{cfg.weights} is gated: {GATED.format(repo=cfg.weights, name=name)}",
                                       details=exc.details) from None
        raise
    return Sam3Backend.load(located.path, device, dtype)
