"""The fused CPU towers (ovdet.cpu_fused): same maths as transformers, and it steps aside
whenever it does not apply (gradients, fp32, hidden states, casts, other encoders)."""

import copy
import pickle

import pytest
import torch
from torch import nn
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel, Owlv2VisionConfig,
                          Owlv2VisionModel, OwlViTTextConfig, OwlViTTextModel, OwlViTVisionConfig, OwlViTVisionModel)

from ovdet import Detector
from ovdet.cpu_fused import FusedEncoder, PatchEmbedding, accelerate_tower, bf16_kernels_available
from ovdet.runtime import ReducedPrecisionLinear

pytestmark = pytest.mark.skipif(not bf16_kernels_available(),
                                reason="no oneDNN bf16 kernels on this CPU/torch build: ovdet keeps the plain tower")

SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, image_size=64,
             patch_size=16)
BUILDERS = {
    "owlvit": lambda: OwlViTVisionModel(OwlViTVisionConfig(**SMALL)),
    "owlv2": lambda: Owlv2VisionModel(Owlv2VisionConfig(**SMALL)),
    "clip": lambda: CLIPVisionModel(CLIPVisionConfig(**SMALL)),
    "clip-gelu": lambda: CLIPVisionModel(CLIPVisionConfig(**SMALL, hidden_act="gelu")),
}


def tower(kind: str, dtype=torch.float32):
    """(vision transformer, its untouched copy) with the same random weights, in `dtype`."""
    torch.manual_seed(0)
    model = BUILDERS[kind]().eval().to(dtype)
    with torch.no_grad():  # non-trivial layer norms and biases, so a dropped term would show
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
    vision = getattr(model, "vision_model", model)  # transformers 5's CLIPVisionModel is the transformer itself
    return vision, copy.deepcopy(vision)


def pixels(n=2, size=64, dtype=torch.float32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1)).to(dtype)


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_fused_maths_equal_transformers_in_fp32(kind):
    fast, ref = tower(kind)
    assert accelerate_tower(fast)
    assert isinstance(fast.encoder, FusedEncoder) and isinstance(fast.embeddings.patch_embedding, PatchEmbedding)
    fast.encoder.fast_dtypes = (torch.float32,)  # run the fused path in fp32 to check its maths exactly
    with torch.inference_mode():
        want = ref(pixel_values=pixels()).last_hidden_state
        got = fast(pixel_values=pixels()).last_hidden_state
    assert fast.encoder._fused is not None, "the fused path did not run"
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["owlvit", "clip-gelu"])
def test_bf16_fused_is_as_close_to_fp32_as_unfused_bf16(kind):
    fast, slow = tower(kind, torch.bfloat16)
    exact = copy.deepcopy(slow).float()
    accelerate_tower(fast)
    with torch.inference_mode():
        want = exact(pixel_values=pixels()).last_hidden_state
        unfused = slow(pixel_values=pixels(dtype=torch.bfloat16)).last_hidden_state
        fused = fast(pixel_values=pixels(dtype=torch.bfloat16)).last_hidden_state
    assert fast.encoder._fused is not None and fused.dtype == torch.bfloat16
    assert rel_err(unfused, want) < 0.02
    assert rel_err(fused, want) < 1.5 * rel_err(unfused, want) + 1e-3


TEXT = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, vocab_size=100,
            max_position_embeddings=16)
TEXT_BUILDERS = {
    "clip": lambda: CLIPTextModel(CLIPTextConfig(**TEXT)),
    "owlvit": lambda: OwlViTTextModel(OwlViTTextConfig(**TEXT)),
}


def text_tower(kind: str, dtype=torch.float32):
    torch.manual_seed(0)
    model = TEXT_BUILDERS[kind]().eval().to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
    text = getattr(model, "text_model", model)
    return text, copy.deepcopy(text)


def tokens(padded: bool):
    """(3, 10) ids ending in the highest id (CLIP pools there) and their attention mask; with
    `padded`, rows 1 and 2 stop early and are padded on the right, as the tokenizers do."""
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 98, (3, 10), generator=gen)
    mask = torch.ones(3, 10, dtype=torch.long)
    ends = (9, 5, 2) if padded else (9, 9, 9)
    for row, end in enumerate(ends):
        ids[row, end] = 99
        ids[row, end + 1:] = 0
        mask[row, end + 1:] = 0
    return ids, mask


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("kind", list(TEXT_BUILDERS))
def test_fused_text_tower_equals_transformers_in_fp32(kind, padded):
    fast, ref = text_tower(kind)
    assert accelerate_tower(fast) and isinstance(fast.encoder, FusedEncoder)
    fast.encoder.fast_dtypes = (torch.float32,)
    ids, mask = tokens(padded)
    with torch.inference_mode():
        want = ref(input_ids=ids, attention_mask=mask)
        got = fast(input_ids=ids, attention_mask=mask)
    assert fast.encoder._fused is not None, "the fused path did not run"
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-5, rtol=1e-4)
    real = mask.bool()  # padding positions are never read; the real tokens must all agree
    torch.testing.assert_close(got.last_hidden_state[real], want.last_hidden_state[real], atol=1e-5, rtol=1e-4)


def test_bf16_fused_text_tower_is_as_close_to_fp32_as_unfused_bf16():
    fast, slow = text_tower("clip", torch.bfloat16)
    exact = copy.deepcopy(slow).float()
    accelerate_tower(fast)
    ids, mask = tokens(padded=True)
    with torch.inference_mode():
        want = exact(input_ids=ids, attention_mask=mask).pooler_output
        unfused = slow(input_ids=ids, attention_mask=mask).pooler_output
        fused = fast(input_ids=ids, attention_mask=mask).pooler_output
    assert fast.encoder._fused is not None
    assert rel_err(fused, want) < 1.5 * rel_err(unfused, want) + 1e-3


@pytest.mark.parametrize("size", [(64, 64), (70, 50)])  # 70 x 50: the convolution drops the remainder
def test_patch_embedding_equals_the_convolution(size):
    conv = nn.Conv2d(3, 8, kernel_size=16, stride=16, bias=True)
    patch = PatchEmbedding(conv)
    assert patch.weight is conv.weight and patch.bias is conv.bias  # shared, not copied
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        assert torch.allclose(patch(x), conv(x), atol=1e-5)
        assert patch(x).flatten(2).transpose(1, 2).is_contiguous()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="Kernel size"):
        patch(torch.randn(1, 3, 8, 40))  # smaller than a patch: the convolution's own error
    # with gradients it is the convolution itself
    x.requires_grad_(True)
    patch(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_gradients_hidden_states_and_fp32_use_the_original_layers():
    fast, ref = tower("owlvit", torch.bfloat16)
    accelerate_tower(fast)
    seen = []
    fast.encoder.layers[-1].register_forward_hook(lambda *a: seen.append(1))
    with torch.inference_mode():  # hidden states are collected by hooks on the original layers
        out = fast(pixel_values=pixels(dtype=torch.bfloat16), output_hidden_states=True)
    assert len(out.hidden_states) == 3 and seen == [1] and fast.encoder._fused is None
    x = pixels(dtype=torch.bfloat16).requires_grad_(True)
    fast(pixel_values=x).last_hidden_state.float().sum().backward()  # the explainer's path
    assert seen == [1, 1] and x.grad is not None
    fast.float()
    with torch.inference_mode():
        got = fast(pixel_values=pixels()).last_hidden_state
        want = ref.float()(pixel_values=pixels()).last_hidden_state
    # the encoder is the original; the patch embedding's matmul differs from the conv by rounding
    assert fast.encoder._fused is None and torch.allclose(got, want, atol=1e-5)


def test_copies_and_casts_after_a_fused_call():
    fast, _ = tower("clip", torch.bfloat16)
    accelerate_tower(fast)
    x = pixels(dtype=torch.bfloat16)
    with torch.inference_mode():
        first = fast(pixel_values=x).last_hidden_state
    assert fast.encoder._fused is not None
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):  # packed weights are rebuilt
        assert clone.encoder._fused is None
        with torch.inference_mode():
            assert torch.equal(clone(pixel_values=x).last_hidden_state, first)
    fast.to(torch.float32)  # a cast drops the packed copies of the old weights
    assert fast.encoder._fused is None


def test_cpus_without_bf16_kernels_keep_the_plain_tower(monkeypatch):
    import ovdet.cpu_fused as cpu_fused

    monkeypatch.setattr(cpu_fused, "bf16_kernels_available", lambda: False)
    fast, _ = tower("owlvit", torch.bfloat16)
    before = fast.encoder
    assert not accelerate_tower(fast) and fast.encoder is before


def test_other_encoders_are_left_alone():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.layers = nn.ModuleList([nn.Linear(4, 4)])

    odd = Odd()
    before = odd.encoder
    assert not accelerate_tower(odd) and odd.encoder is before


def test_detectors_use_the_fused_towers_in_bf16_on_cpu_only(tiny_owlv2, tiny_clip):
    from ovdet.clip import ClipModel

    kw = dict(device="cpu", cache_text=False)
    fast = Detector.from_pretrained(str(tiny_owlv2), precision="bf16", **kw).backend
    ref = Detector.from_pretrained(str(tiny_owlv2), precision="fp32", **kw).backend
    assert isinstance(fast.clip.vision_model.encoder, FusedEncoder)
    assert isinstance(fast.clip.text_model.encoder, FusedEncoder)
    assert not isinstance(ref.clip.vision_model.encoder, FusedEncoder)
    assert not isinstance(ref.clip.text_model.encoder, FusedEncoder)
    # heads: hidden layers in bf16, the output layers (box offsets, logit shift/scale) in fp32
    assert isinstance(fast.model.box_head.dense0, ReducedPrecisionLinear)
    assert fast.model.box_head.dense2.weight.dtype == torch.float32
    assert fast.model.class_head.logit_shift.weight.dtype == torch.float32
    assert isinstance(ref.model.box_head.dense0, nn.Linear)
    clip = ClipModel.load(tiny_clip, torch.device("cpu"), torch.bfloat16)
    assert isinstance(clip.model.vision_model.encoder, FusedEncoder)
    assert isinstance(clip.model.text_model.encoder, FusedEncoder)


def test_precision_check_tool(tiny_owlv2, chelsea_path, capsys):
    from conftest import _load_tool

    assert _load_tool("precision_check").main([str(tiny_owlv2), str(chelsea_path), "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bf16 vs fp32 over 64 candidate boxes") and "min IoU" in lines[-1]
    assert float(lines[-1].split()[-1]) >= 0.9  # the same guard as the accuracy test, looser
