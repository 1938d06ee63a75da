"""Relevance maps: where in an image CLIP finds the evidence for a text.

    from ovdet.explain import explain, Explainer
    heat = explain("photo.jpg", "cat")                     # (H, W) float32 in [0, 1]
    ex = Explainer.from_pretrained("clip-b32")              # holds the model for repeated calls
    maps = ex.explain_classes("photo.jpg", ["cat", "dog"])  # (C, H, W)

The quantity explained is the cosine similarity between CLIP's image embedding and the class's
text embedding (the template ensemble used by `classify`). Two methods:

  - "gradcam": Grad-CAM on the patch tokens that the last encoder block's attention reads
    (the output of its first layer norm). CLIP pools the CLS token only, so the patch tokens
    *leaving* the last block have no path to the embedding and zero gradient; the tokens
    entering its attention are the last place where patches reach the CLS token.
    Channel weights are the gradients averaged over the patches; map = ReLU(tokens @ weights).
  - "rollout": gradient-weighted attention rollout (Chefer et al., ICCV 2021 "Generic
    attention-model explainability"): per block, the head-mean of ReLU(grad * attention);
    relevance R = I, R <- R + A_bar R through the blocks; the CLS row over the patches.
    Attention weights need transformers' eager attention (SDPA does not return them): the
    vision tower is switched to it for the call and switched back afterwards.

Whole-image maps pad the image to a square with CLIP's mean colour (as the pooled region
mode does) so no part is cut off; the token grid is upsampled bilinearly and cropped back to
the image. Per-detection maps cut the box out as a square (`square_crops`, context 1.0: the
box plus the image around its shorter side), explain that crop as CLIP's crop scorer sees it,
paste the map back into the image frame and set everything outside the box to 0.

Maps are min-max normalised over the image (or the box): 1 is the most relevant pixel, 0 the
least; a map with no positive relevance anywhere is all zeros. Only CLIP ViTs are supported:
ovdet loads CLIP through transformers, which has no CLIP ResNet.

Gradients need full precision: `Explainer.from_pretrained` loads the model in fp32 whatever
the config's precision, and a bf16/fp16 `ClipModel` handed to `Explainer` is copied to fp32
(the caller's model is left as it is); fp64 is accepted too, for numerical checks.
"""

from __future__ import annotations

import importlib

METHODS = ("gradcam", "rollout")
NOT_A_CLIP_VIT = (
    "explain needs a CLIP ViT (a clip-* preset, CLIP checkpoint folder or hub id); CLIP ResNets are not "
    "supported (ovdet loads CLIP through transformers, which has ViT CLIP only)"
)


# the maths lives in `maps` (torch, transformers): loaded on first use, so registering the
# `ovdet explain` command costs nothing
_LAZY = ("Explainer", "explain", "gradcam_grid", "normalise", "overlay", "square_geometry", "upsample",
         "rollout_grid", "box_mask")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module("ovdet.explain.maps"), name)
    raise AttributeError(f"module 'ovdet.explain' has no attribute {name!r}")
