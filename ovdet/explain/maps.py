"""The relevance-map maths and `Explainer` (see `ovdet.explain` for the methods)."""


from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..defaults import DEFAULT_CLASSIFIER
from ..backends.clip_regions import pad_to_square, square_crops, square_geometry  # noqa: F401 (re-exported)
from ..cache import TextEmbeddingCache
from ..clip import ClipModel
from ..config import DetectorConfig
from ..errors import ConfigError, OvdetError
from ..io import load_image
from ..structures import Detections
from ..text import VocabularyEncoder, resolve_templates, validate_vocabulary
from . import METHODS, NOT_A_CLIP_VIT



@dataclass(frozen=True)
class TokenGradients:
    """What a Grad-CAM map is built from, for one image and one text.

    similarity: cosine similarity of the image and text embeddings.
    tokens: (N, D_v) patch tokens as the last block's attention reads them (CLS excluded),
        N = grid * grid, row-major over the patch grid.
    gradients: (N, D_v) d similarity / d tokens.
    """

    similarity: float
    tokens: torch.Tensor
    gradients: torch.Tensor
    grid: int


# -- maps on the token grid -------------------------------------------------------------------
def gradcam_grid(tokens: torch.Tensor, gradients: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, D_v) tokens and gradients -> (grid, grid) ReLU(tokens @ mean-over-patches gradient)."""
    weights = gradients.mean(dim=0)  # one weight per channel, as in Grad-CAM's global pooling
    return F.relu(tokens @ weights).reshape(grid, grid)


def rollout_grid(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], grid: int) -> torch.Tensor:
    """Per block (heads, T, T) attention and its gradient (T = 1 + grid^2, CLS first) ->
    (grid, grid) relevance of each patch for the CLS token."""
    t = attentions[0].shape[-1]
    relevance = torch.eye(t, dtype=attentions[0].dtype, device=attentions[0].device)
    for attn, grad in zip(attentions, gradients):
        a_bar = F.relu(grad * attn).mean(dim=0)  # keep what raises the similarity, average heads
        relevance = relevance + a_bar @ relevance
    return relevance[0, 1:].reshape(grid, grid)


def _linear_weights(g: int, side: int, n: int) -> np.ndarray:
    """(n, g): rows 0..n-1 of a 1-D linear resize from g to `side` samples, the cells tiling
    the line exactly (half-pixel centres, edges clamped: torch's align_corners=False)."""
    src = np.clip((np.arange(n) + 0.5) * g / side - 0.5, 0.0, g - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, g - 1)
    frac = src - lo
    weights = np.zeros((n, g), np.float64)
    np.add.at(weights, (np.arange(n), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(n), hi), frac)
    return weights


def upsample(grid_map: torch.Tensor, side: int, height: int | None = None, width: int | None = None) -> np.ndarray:
    """(g, g) token-grid map -> the top-left (height, width) part of its bilinear resize to
    (side, side), float32 (default: the whole square). The g x g cells tile the square.

    Separable (rows, then columns), so only the part that is kept is ever computed: an
    elongated image padded to a square does not pay for the padding's pixels."""
    g = grid_map.shape[-1]
    values = grid_map.detach().double().cpu().numpy()
    rows = _linear_weights(g, side, side if height is None else height)
    cols = _linear_weights(g, side, side if width is None else width)
    return (rows @ values @ cols.T).astype(np.float32)


def normalise(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Min-max to [0, 1] over `mask` (all pixels if None); 0 outside the mask. A constant map
    (e.g. Grad-CAM with no positive evidence) becomes all zeros."""
    out = np.zeros(values.shape, np.float32)
    region = values if mask is None else values[mask]
    if region.size == 0:
        return out
    lo, hi = float(region.min()), float(region.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 1e-12 * max(abs(hi), 1.0):
        return out
    scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if mask is None:
        return scaled
    out[mask] = scaled[mask]
    return out


def box_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """(H, W) bool: the pixels an xyxy box overlaps (at least one pixel for a tiny box inside)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    c0, r0 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
    c1, r1 = min(max(int(np.ceil(x2)), c0 + 1), width), min(max(int(np.ceil(y2)), r0 + 1), height)
    mask = np.zeros((height, width), bool)
    mask[r0:r1, c0:c1] = True
    return mask


@contextlib.contextmanager
def eager_attention(vision_model):
    """Run the vision tower with eager attention, which returns the attention weights (SDPA
    and flash kernels do not); the previous implementation is restored afterwards."""
    previous = vision_model.config._attn_implementation
    if previous == "eager":
        yield
        return
    vision_model.set_attn_implementation("eager")
    try:
        yield
    finally:
        vision_model.set_attn_implementation(previous)


# -- the explainer ----------------------------------------------------------------------------
class Explainer:
    """Relevance maps from a CLIP ViT, holding the model (in fp32) for repeated calls."""

    def __init__(self, clip: ClipModel, templates: Sequence[str] = ("a photo of a {}.",),
                 text_cache: TextEmbeddingCache | None = None):
        vision = getattr(clip.model, "vision_model", None)
        if vision is None or not hasattr(getattr(vision, "encoder", None), "layers"):
            raise ConfigError(NOT_A_CLIP_VIT)
        if clip.dtype not in (torch.float32, torch.float64):
            # bf16/fp16 gradients are too coarse for maps; keep the caller's model as it is
            model = copy.deepcopy(clip.model).float()
            clip = ClipModel(model, clip.processor, clip.device, torch.float32, identity=clip.identity)
        self.clip = clip
        self.dtype = clip.dtype
        self.vision = clip.model.vision_model
        self.grid = clip.image_size // clip.patch_size
        self.vocabulary = VocabularyEncoder(lambda p: self.clip.encode_text(p), clip.identity, templates, text_cache)

    @classmethod
    def from_config(cls, config: DetectorConfig) -> "Explainer":
        if config.backend != "clip":
            raise ConfigError(f"{NOT_A_CLIP_VIT}; got a {config.backend!r} model ({config.weights or config.name})")
        clip = ClipModel.from_config(config, dtype=torch.float32, compile=False)  # gradients need fp32
        cache = TextEmbeddingCache() if config.cache_text else None
        return cls(clip, resolve_templates(config.templates), cache)

    @classmethod
    def from_pretrained(cls, model: str | Path = DEFAULT_CLASSIFIER, device: str | None = None, **overrides: Any) -> "Explainer":
        """A CLIP preset (clip-b32, clip-b16, clip-l14...), CLIP checkpoint folder or hub id, or
        a YAML config; overrides as for `Detector.from_pretrained` (precision is ignored: fp32)."""
        from ..detector import resolve_config

        return cls.from_config(resolve_config(model, device=device, **overrides))

    # -- text ---------------------------------------------------------------------------------
    def text_embeddings(self, classes: str | Iterable[str]) -> torch.Tensor:
        """(C, D) unit class embeddings (template ensemble) as ordinary autograd-usable
        tensors in the model's dtype (the text tower runs in inference mode)."""
        names = validate_vocabulary(classes)
        with torch.inference_mode(False):
            return self.vocabulary(names).clone().to(self.clip.device, self.dtype)

    # -- forward and gradients ----------------------------------------------------------------
    def pixels(self, square: np.ndarray) -> torch.Tensor:
        """(S, S, 3) uint8 square -> (1, 3, s, s) normalised pixels at the model's input size."""
        return self.clip.preprocess_square([square]).to(self.dtype)

    def _forward(self, pixel_values: torch.Tensor, text: torch.Tensor, perturbation: torch.Tensor | None = None,
                 attentions: bool = False):
        """Similarities (C,), the tokens the last block's attention reads (1, T, D_v), and, with
        `attentions`, every block's attention (1, heads, T, T), all in one autograd graph.

        `perturbation` (1, T, D_v), if given, is added to those tokens (finite-difference checks).
        Attention weights need the eager implementation, whose softmax runs in fp32 even for
        fp64 models; Grad-CAM keeps the model's own (SDPA), exact in the model's dtype.
        """
        captured: dict[str, Any] = {"attn": []}
        last = self.vision.encoder.layers[-1]

        def keep_tokens(module, inputs, output):
            if perturbation is not None:
                output = output + perturbation
            captured["tokens"] = output
            return output

        def keep_attention(module, inputs, output):
            captured["attn"].append(output[1])

        hooks = [last.layer_norm1.register_forward_hook(keep_tokens)]
        if attentions:
            hooks += [layer.self_attn.register_forward_hook(keep_attention) for layer in self.vision.encoder.layers]
        attention_mode = eager_attention(self.vision) if attentions else contextlib.nullcontext()
        try:
            # pixels require grad so the graph exists even if the caller froze the parameters
            pixel_values = pixel_values.detach().to(self.clip.device, self.dtype).requires_grad_(True)
            with attention_mode:
                feats = self.clip.model.get_image_features(pixel_values=pixel_values)
            feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        finally:
            for h in hooks:
                h.remove()
        sims = F.normalize(feats, dim=-1)[0] @ text.T
        return sims, captured["tokens"], captured["attn"]

    def token_gradients(self, pixel_values: torch.Tensor, text: torch.Tensor,
                        perturbation: torch.Tensor | None = None) -> TokenGradients:
        """Grad-CAM's inputs for one text: pixel_values (1, 3, s, s), text (D,) unit embedding."""
        with torch.inference_mode(False), torch.enable_grad():
            sims, tokens, _ = self._forward(pixel_values, text[None].to(self.dtype), perturbation)
            (grad,) = torch.autograd.grad(sims[0], tokens)
        return TokenGradients(float(sims[0].detach()), tokens[0, 1:].detach(), grad[0, 1:].detach(), self.grid)

    def grid_maps(self, pixel_values: torch.Tensor, text: torch.Tensor, method: str = "gradcam") -> torch.Tensor:
        """(1, 3, s, s) pixels and (C, D) text embeddings -> (C, g, g) raw relevance (>= 0,
        not normalised); one forward pass, one backward pass per text."""
        if method not in METHODS:
            raise ConfigError(f"unknown explanation method {method!r} (choose {' or '.join(METHODS)})")
        maps = []
        with torch.inference_mode(False), torch.enable_grad():
            sims, tokens, attns = self._forward(pixel_values, text.to(self.dtype), attentions=method == "rollout")
            for c in range(len(text)):
                if method == "gradcam":
                    (grad,) = torch.autograd.grad(sims[c], tokens, retain_graph=True)
                    maps.append(gradcam_grid(tokens[0, 1:].detach(), grad[0, 1:], self.grid))
                else:
                    grads = torch.autograd.grad(sims[c], attns, retain_graph=True)
                    maps.append(rollout_grid([a[0].detach() for a in attns], [g[0] for g in grads], self.grid))
        return torch.stack(maps).detach()

    # -- maps in image pixels -----------------------------------------------------------------
    def iter_class_maps(self, image: Any, classes: str | Iterable[str], method: str = "gradcam") -> Iterator[np.ndarray]:
        """Whole-image maps one class at a time, each (H, W) float32 in [0, 1]: one forward
        pass for all classes, but only one full-size map in memory (large vocabularies)."""
        array = load_image(image)
        h, w = array.shape[:2]
        grids = self.grid_maps(self.pixels(pad_to_square(array)), self.text_embeddings(classes), method)
        side = max(h, w)  # the padded square; padding sits at the bottom/right and is cut off
        for grid in grids:
            yield normalise(upsample(grid, side, h, w))

    def explain_classes(self, image: Any, classes: str | Iterable[str], method: str = "gradcam") -> np.ndarray:
        """Whole-image maps: image (path, PIL or RGB array, (H, W)) -> (C, H, W) float32 in [0, 1]."""
        return np.stack(list(self.iter_class_maps(image, classes, method)))

    def explain(self, image: Any, text: str, method: str = "gradcam") -> np.ndarray:
        """(H, W) float32 map in [0, 1] of where the image supports `text` (a class name)."""
        return self.explain_classes(image, [text], method)[0]

    def explain_box(self, image: Any, box: Sequence[float], text: str, method: str = "gradcam") -> np.ndarray:
        """(H, W) float32 map of one xyxy box's evidence for `text`; 0 outside the box."""
        return self.explain_boxes(image, [box], [text], method)[0]

    def explain_boxes(self, image: Any, boxes: Sequence[Sequence[float]], texts: Sequence[str],
                      method: str = "gradcam") -> np.ndarray:
        """Per box (xyxy pixels) and its class name -> (N, H, W) float32 maps in [0, 1].

        The result holds N full-size maps (4 N H W bytes): for many boxes on a large image,
        call `explain_box` per box instead."""
        array = load_image(image)
        h, w = array.shape[:2]
        if len(boxes) != len(texts):
            raise OvdetError(f"explain_boxes: {len(boxes)} boxes but {len(texts)} class names")
        if not len(boxes):
            return np.zeros((0, h, w), np.float32)
        unique = list(dict.fromkeys(texts))
        text = self.text_embeddings(unique)
        box_tensor = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
        crops = square_crops(array, box_tensor, context=1.0)
        out = np.zeros((len(boxes), h, w), np.float32)
        for i, (box, name, crop) in enumerate(zip(box_tensor.tolist(), texts, crops)):
            grid = self.grid_maps(self.pixels(crop), text[unique.index(name)][None], method)[0]
            left, top, side = square_geometry(box)
            crop_map = upsample(grid, side)
            full = np.zeros((h, w), np.float32)
            x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
            if x1 > x0 and y1 > y0:
                full[y0:y1, x0:x1] = crop_map[y0 - top : y1 - top, x0 - left : x1 - left]
            out[i] = normalise(full, box_mask(box, h, w))
        return out

    def explain_detections(self, image: Any, dets: Detections, method: str = "gradcam") -> np.ndarray:
        """One map per detection, for its box and class: (N, H, W) float32 in [0, 1]."""
        return self.explain_boxes(image, dets.xyxy.tolist(), list(dets.labels), method)


def explain(image: Any, text: str, model: str | Path | Explainer | ClipModel = DEFAULT_CLASSIFIER, method: str = "gradcam",
            device: str | None = None, **overrides: Any) -> np.ndarray:
    """Relevance map of `text` (a class name, put through the model's prompt templates) over
    `image`: (H, W) float32 in [0, 1], the image's size.

    `model` is a CLIP preset, checkpoint folder, hub id or YAML config (loaded on every call:
    build an `Explainer` once for repeated calls), an `Explainer`, or a `ClipModel`.
    """
    if isinstance(model, Explainer):
        explainer = model
    elif isinstance(model, ClipModel):
        explainer = Explainer(model)
    else:
        explainer = Explainer.from_pretrained(model, device=device, **overrides)
    return explainer.explain(image, text, method)


def overlay(image: Any, relevance: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """(H, W, 3) RGB uint8 image and (H, W) map in [0, 1] -> (H, W, 3) uint8 heat overlay; the
    colour is blended in proportion to the relevance, so irrelevant pixels keep the photo."""
    from matplotlib import colormaps

    array = load_image(image).astype(np.float32)
    rel = np.clip(np.nan_to_num(relevance.astype(np.float32)), 0.0, 1.0)
    heat = colormaps[colormap](rel)[..., :3].astype(np.float32) * 255.0
    weight = alpha * (0.3 + 0.7 * rel)[..., None]  # a light tint everywhere keeps the scale readable
    return np.clip(array * (1.0 - weight) + heat * weight + 0.5, 0, 255).astype(np.uint8)
