"""Faster bf16 inference of CLIP-style transformer towers on CPUs: the image towers of
OWL-ViT, OWLv2 and CLIP, and their text towers.

transformers runs each encoder layer as separate ops: three q/k/v matmuls, quick_gelu as a
multiply and a sigmoid over the (tokens x 4 width) MLP activations, and the residual adds, each a
pass over memory. On a 2-core AMX CPU those passes cost a third of the OWL-ViT B/32 forward,
and as much as the matmuls in the CLIP text tower. Here every encoder layer is run through
oneDNN's fused linear kernels instead:

    qkv   one matmul against the concatenated q/k/v weight, prepacked for AMX
    attn  torch's fused SDPA kernel, with the mask and causal flag transformers would pass
    out   matmul + residual add in one kernel (oneDNN binary post-op)
    fc1   matmul + quick_gelu in one kernel: quick_gelu(z) = swish(1.702 z) / 1.702, so fc1
          is pre-scaled by 1.702 and fc2 by 1 / 1.702 (oneDNN's swish has no slope argument)
    fc2   matmul + residual add in one kernel

and an image tower's patch embedding (a stride = kernel convolution, which oneDNN runs at a
tenth of its matmul speed here) as a reshape plus one matmul.

Numerics: the same maths; in fp32 it equals the transformers encoder to 1e-5, in bf16 (with
fp32 accumulation) it is as close to fp32 as the unfused bf16 tower is (tests/test_cpu_fused.py).
The original modules stay in place and run whenever the fast path does not apply: gradients
(the explainer), fp32 (the accuracy reference), CUDA, requests for hidden states or
attentions. The fused weights (about 75 % of the encoder's size again) are built on the first
fast call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QUICK_GELU_SLOPE = 1.702


def fused_kernels_available() -> bool:
    """oneDNN (mkldnn) is compiled in and exposes its fused linear kernels."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def bf16_kernels_available() -> bool:
    """oneDNN runs bf16 on this CPU (AVX512-BF16/AMX, or AVX512BW/AVX-NE-CONVERT); on older
    CPUs its bf16 ops raise, while plain torch ops still work (slowly)."""
    try:
        return fused_kernels_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _activation(layer: nn.Module) -> str | None:
    """The MLP activation this module knows how to fuse ("quick_gelu", "gelu"), else None."""
    name = type(getattr(getattr(layer, "mlp", None), "activation_fn", None)).__name__
    return {"QuickGELUActivation": "quick_gelu", "GELUActivation": "gelu"}.get(name)


def _linears_with_bias(module: nn.Module, names) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Linear) and getattr(module, n).bias is not None for n in names)


def supports(encoder: nn.Module) -> bool:
    """True when every layer has the CLIP encoder-layer structure this module fuses: pre-norm
    attention with biased q/k/v/out projections and a two-layer (quick_)gelu MLP."""
    layers = getattr(encoder, "layers", None)
    if not layers:
        return False
    for layer in layers:
        attn = getattr(layer, "self_attn", None)
        if (_activation(layer) is None
                or not all(isinstance(getattr(layer, n, None), nn.LayerNorm) for n in ("layer_norm1", "layer_norm2"))
                or not _linears_with_bias(attn, ("q_proj", "k_proj", "v_proj", "out_proj"))
                or not _linears_with_bias(layer.mlp, ("fc1", "fc2"))
                or not all(hasattr(attn, n) for n in ("embed_dim", "head_dim", "scale"))):
            return False
    return True


class _FusedLayer:
    """The fused weights of one encoder layer (built from, and sharing what it can with, the
    original layer). Plain attributes, not parameters: prepacked oneDNN tensors cannot be
    moved, cast or saved, so they never enter state dicts or `.to()`."""

    def __init__(self, layer: nn.Module, tokens_hint: int):
        mk = torch.ops.mkldnn
        attn, mlp = layer.self_attn, layer.mlp
        self.ln1, self.ln2 = layer.layer_norm1, layer.layer_norm2
        self.heads = attn.embed_dim // attn.head_dim
        self.head_dim, self.scale = attn.head_dim, attn.scale
        w_qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        self.b_qkv = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        # prepacking pays for the wide matmuls (qkv, fc1) and loses on the narrow ones here
        self.w_qkv = mk._reorder_linear_weight(w_qkv, tokens_hint)
        self.w_out, self.b_out = attn.out_proj.weight, attn.out_proj.bias
        if _activation(layer) == "quick_gelu":
            k = QUICK_GELU_SLOPE
            self.act = "swish"
            self.w1 = mk._reorder_linear_weight(mlp.fc1.weight * k, tokens_hint)
            self.b1 = mlp.fc1.bias * k
            self.w2 = mlp.fc2.weight / k
        else:
            self.act = "gelu"
            self.w1 = mk._reorder_linear_weight(mlp.fc1.weight, tokens_hint)
            self.b1 = mlp.fc1.bias
            self.w2 = mlp.fc2.weight
        self.b2 = mlp.fc2.bias

    def __call__(self, x: torch.Tensor, b: int, n: int, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        """x: (b * n, D) residual stream -> the same after this layer. `mask`: None or the
        (b, 1, n, n) mask transformers hands its attention (bool: True = attend; or additive)."""
        mk = torch.ops.mkldnn
        d = x.shape[-1]
        h = F.layer_norm(x, (d,), self.ln1.weight, self.ln1.bias, self.ln1.eps)
        qkv = mk._linear_pointwise(h, self.w_qkv, self.b_qkv, "none", [], "")
        q, k, v = qkv.view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (b, heads, n, hd) each
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale)
        o = o.transpose(1, 2).reshape(b * n, d)
        x = mk._linear_pointwise.binary(o, x, self.w_out, self.b_out, "add")
        h = F.layer_norm(x, (d,), self.ln2.weight, self.ln2.bias, self.ln2.eps)
        h = mk._linear_pointwise(h, self.w1, self.b1, self.act, [], "none" if self.act == "gelu" else "")
        return mk._linear_pointwise.binary(h, x, self.w2, self.b2, "add")


try:  # transformers 5 collects hidden states and attentions through this context variable
    from transformers.utils.output_capturing import _active_collector
except ImportError:  # another transformers layout: such requests then arrive as kwargs
    _active_collector = None


def _outputs_requested() -> bool:
    """True while a transformers forward collects hidden states or attentions: it does so with
    hooks on the original layers, which the fused path never calls."""
    return _active_collector is not None and bool(_active_collector.get())


class FusedEncoder(nn.Module):
    """Drop-in replacement for a CLIP-style `encoder` (same call, same output type).

    Runs the fused layers for CPU inference in `fast_dtypes`; otherwise the original encoder,
    kept as `self.encoder`, runs unchanged.
    """

    # bf16 only: fp32 stays on the transformers modules, the reference for accuracy checks
    # (the fused maths also runs in fp32, which is how the tests check it to 1e-5)
    fast_dtypes: tuple[torch.dtype, ...] = (torch.bfloat16,)

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self._fused: list[_FusedLayer] | None = None

    @property
    def layers(self) -> nn.ModuleList:
        """The original layers (hooks placed on them fire on the unfused path only)."""
        return self.encoder.layers

    def _fast(self, x: torch.Tensor, attention_mask, kwargs) -> bool:
        weight = self.encoder.layers[0].mlp.fc1.weight
        return (
            x.device.type == weight.device.type == "cpu"
            and x.dtype == weight.dtype
            and x.dtype in self.fast_dtypes
            and (attention_mask is None or attention_mask.dim() == 4)
            and not torch.is_grad_enabled()
            and not any(kwargs.get(k) for k in ("output_attentions", "output_hidden_states"))
            and not _outputs_requested()
        )

    def forward(self, inputs_embeds: torch.Tensor, attention_mask=None, **kwargs):
        if not self._fast(inputs_embeds, attention_mask, kwargs):
            return self.encoder(inputs_embeds, attention_mask, **kwargs)
        from transformers.modeling_outputs import BaseModelOutput

        b, n, d = inputs_embeds.shape
        if self._fused is None:
            self._fused = [_FusedLayer(layer, n) for layer in self.encoder.layers]
        # as transformers' SDPA attention decides: the causal flag only when no mask is given
        causal = bool(kwargs.get("is_causal")) and attention_mask is None and n > 1
        x = inputs_embeds.reshape(b * n, d).contiguous()
        for layer in self._fused:
            x = layer(x, b, n, attention_mask, causal)
        return BaseModelOutput(last_hidden_state=x.view(b, n, d))

    def _apply(self, fn, recurse=True):
        self._fused = None  # a move or cast invalidates the packed copies; rebuilt on demand
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fused"] = None  # packed oneDNN tensors do not pickle or deepcopy
        return state


class PatchEmbedding(nn.Conv2d):
    """A ViT patch-embedding convolution (kernel = stride, no padding) computed on CPU as
    patchify + one matmul: (B, 3, H, W) -> (B, D, H/p, W/p), the convolution's output.
    Shares the original's parameters; anything else (CUDA, gradients) uses the convolution."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         bias=conv.bias is not None, device="meta")
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ph, pw = self.kernel_size
        gh, gw = h // ph, w // pw
        if x.device.type != "cpu" or torch.is_grad_enabled() or gh * gw == 0:
            return super().forward(x)
        x = x[:, :, : gh * ph, : gw * pw]  # a convolution drops the remainder too
        patches = x.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * ph * pw)
        out = F.linear(patches, self.weight.reshape(self.out_channels, -1), self.bias)
        # (B, gh, gw, D) memory viewed as (B, D, gh, gw): flatten(2).transpose(1, 2) is then free
        return out.view(b, gh, gw, -1).permute(0, 3, 1, 2)


def accelerate_tower(tower: nn.Module) -> bool:
    """Swap in the fused encoder, and for an image tower the matmul patch embedding, in place,
    where they apply (a CLIP-style transformer; oneDNN with bf16 kernels on this CPU). Returns
    whether anything was swapped. Inputs the fast path does not cover still run the originals."""
    encoder = getattr(tower, "encoder", None)
    if not bf16_kernels_available() or encoder is None or isinstance(encoder, FusedEncoder) or not supports(encoder):
        return False
    tower.encoder = FusedEncoder(encoder)
    embeddings = getattr(tower, "embeddings", None)
    conv = getattr(embeddings, "patch_embedding", None)
    if (type(conv) is nn.Conv2d and conv.stride == conv.kernel_size and conv.padding in ((0, 0), "valid")
            and conv.dilation == (1, 1) and conv.groups == 1):
        embeddings.patch_embedding = PatchEmbedding(conv)
    return True
