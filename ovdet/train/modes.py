"""What trains in each `--mode`, at which learning rate, and how the result is saved.

  prompt  only the trained classes' (C, D) embeddings; the model is untouched, so any other
          class gives exactly the base model's detections. Saved as the base checkpoint plus
          `learned_classes.safetensors` (`ovdet.learned`), which the OWL backend reads.
  heads   the class, box and objectness heads.
  lora    low-rank adapters (peft) on the image tower's attention projections, plus the heads;
          the adapters are merged into the weights before saving (`merge_and_unload`), so the
          checkpoint loads with plain transformers, without peft.
  full    everything; the text tower at `TEXT_LR_RATIO` of the image side's rate (scenic's OWL
          recipe: 5e-5 image side, 2e-6 text).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import OvdetError
from .model import OwlTrainModule, clip_of

MODES = ("prompt", "heads", "lora", "full")
DEFAULT_LR = {"prompt": 1e-3, "heads": 1e-4, "lora": 3e-4, "full": 5e-5}
TEXT_LR_RATIO = 2e-6 / 5e-5
LORA_RANK = 8
# the image tower's attention projections (CLIP ViT names), matched in full by peft
LORA_TARGETS = r".*vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
HEADS = ("class_head", "box_head", "objectness_head")


@dataclass
class Setup:
    """A model made ready for a mode: the module to run, its optimizer parameter groups, and
    the peft wrapper (lora) whose merge gives the plain model back."""

    module: OwlTrainModule
    param_groups: list[dict[str, Any]]
    text_trainable: bool
    peft_model: Any = None


def _unfreeze_heads(model: nn.Module) -> list[nn.Parameter]:
    params = []
    for name in HEADS:
        head = getattr(model, name, None)
        if head is not None:
            for p in head.parameters():
                p.requires_grad_(True)
                params.append(p)
    return params


def prepare(model: nn.Module, mode: str, lr: float, prompt_init: torch.Tensor | None = None) -> Setup:
    """Freeze / unfreeze `model` for `mode` (prompt needs `prompt_init`, the (C, D) starting
    embeddings: the base model's template ensemble of the trained classes)."""
    if mode not in MODES:
        raise OvdetError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    model.requires_grad_(False)
    if mode == "prompt":
        module = OwlTrainModule(model, prompt_init)
        return Setup(module, [{"params": [module.prompts], "lr": lr}], text_trainable=False)
    if mode == "heads":
        return Setup(OwlTrainModule(model), [{"params": _unfreeze_heads(model), "lr": lr}], text_trainable=False)
    if mode == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise OvdetError("--mode lora needs peft: pip install 'ovdet[train]'") from None

        config = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.0, target_modules=LORA_TARGETS)
        peft_model = get_peft_model(model, config)  # adapters injected into `model` in place
        adapters = [p for n, p in model.named_parameters() if "lora_" in n]
        heads = _unfreeze_heads(model)
        return Setup(OwlTrainModule(model), [{"params": adapters + heads, "lr": lr}], text_trainable=False,
                     peft_model=peft_model)
    clip = clip_of(model)
    model.requires_grad_(True)
    # parts detection never runs: frozen, so that DDP sees every trainable parameter used
    for unused in (clip.visual_projection, getattr(clip, "logit_scale", None)):
        if unused is not None:
            unused.requires_grad_(False)
    text_ids = {id(p) for part in (clip.text_model, clip.text_projection) for p in part.parameters()}
    text = [p for p in model.parameters() if id(p) in text_ids and p.requires_grad]
    image = [p for p in model.parameters() if id(p) not in text_ids and p.requires_grad]
    return Setup(OwlTrainModule(model), [{"params": image, "lr": lr}, {"params": text, "lr": lr * TEXT_LR_RATIO}],
                 text_trainable=True)


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (by name): what a checkpoint must hold besides the base."""
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def plain_model(setup: Setup) -> nn.Module:
    """The trained model without peft: lora adapters merged into the weights."""
    if setup.peft_model is not None:
        return setup.peft_model.merge_and_unload()
    return setup.module.model


def save_model(model: nn.Module, processor, out: Path, learned: tuple[list[str], torch.Tensor] | None = None) -> Path:
    """`save_pretrained` of the model and processor into `out` (a checkpoint folder every
    command loads with --model), plus the learned class embeddings of prompt mode."""
    from ..learned import save_learned

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if learned is not None:
        save_learned(out, *learned)
    return out


__all__ = ["DEFAULT_LR", "LORA_TARGETS", "MODES", "Setup", "TEXT_LR_RATIO", "plain_model", "prepare", "save_model",
           "trainable_state"]
