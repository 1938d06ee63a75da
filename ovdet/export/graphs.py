"""The torch modules that become ONNX graphs, and the one call that exports them.

Each graph is a thin wrapper around the transformers model's own submodules, so the export
computes what ovdet's torch path computes (`OwlBackend.image_features` / `class_logits` /
`encode_text`, `ClipModel.encode_pixels` / `encode_text`), in fp32 (fp16 exports convert the
saved graphs: `exporter.to_fp16`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns pooled features as `.pooler_output`, older versions a tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


class OwlImageGraph(torch.nn.Module):
    """pixel_values (B, 3, S, S) -> image_feats (B, P, D), boxes (B, P, 4) normalised cxcywh
    [, objectness (B, P) probabilities in [0, 1] (OWLv2)]."""

    def __init__(self, model, objectness: bool = False, feats: bool = True):
        super().__init__()
        self.model, self.objectness, self.feats = model, objectness, feats

    def forward(self, pixel_values: torch.Tensor):
        feature_map = self.model.image_embedder(pixel_values=pixel_values)[0]
        b, h, w, d = feature_map.shape
        feats = feature_map.reshape(b, h * w, d)
        out = ((feats,) if self.feats else ()) + (self.model.box_predictor(feats, feature_map),)
        if self.objectness:
            out += (torch.sigmoid(self.model.objectness_predictor(feats)),)
        return out


class OwlClassGraph(torch.nn.Module):
    """image_feats (B, P, D) + class_embeds (C, D) -> logits (B, P, C) (the model's learned
    shift and scale; sigmoid gives its scores)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image_feats: torch.Tensor, class_embeds: torch.Tensor):
        queries = class_embeds[None].expand(image_feats.shape[0], -1, -1)
        return self.model.class_predictor(image_feats, queries, None)[0]


class TextGraph(torch.nn.Module):
    """input_ids (N, T) + attention_mask (N, T) int64 -> text_embeds (N, D) float32 (projected;
    unit length when `normalise`, as CLIP's)."""

    def __init__(self, clip_like, normalise: bool = False):
        super().__init__()
        self.clip, self.normalise = clip_like, normalise

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        feats = _pooled(self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
        return F.normalize(feats, dim=-1) if self.normalise else feats


class ClipImageGraph(torch.nn.Module):
    """pixel_values (B, 3, S, S) at CLIP's input size -> image_embeds (B, D), unit length."""

    def __init__(self, clip_model):
        super().__init__()
        self.clip = clip_model

    def forward(self, pixel_values: torch.Tensor):
        return F.normalize(_pooled(self.clip.get_image_features(pixel_values=pixel_values)), dim=-1)


def export_graph(module: torch.nn.Module, example: Sequence[torch.Tensor], path: Path, inputs: dict[str, list],
                 outputs: dict[str, list], opset: int) -> dict:
    """Trace `module` on `example` into `path`; returns the manifest entry of the graph.

    `inputs` / `outputs` map names to shapes, strings naming dynamic axes ("batch", ...).
    TorchScript-based export (`dynamo=False`): these graphs have static control flow, and it
    is 6x faster than the dynamo exporter on them (2 s vs 12 s for a tiny OWLv2).
    """
    dynamic = {name: {i: dim for i, dim in enumerate(shape) if isinstance(dim, str)}
               for name, shape in {**inputs, **outputs}.items()}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter, not the user's business
        torch.onnx.export(module.eval(), tuple(example), str(path), input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    return {"file": path.name, "inputs": inputs, "outputs": outputs}
