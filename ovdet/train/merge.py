"""Weight-space ensembling (WiSE-FT; the OWLv2 paper's recipe for keeping the open vocabulary):
`(1 - A) * base + A * tuned`, parameter by parameter.

A = 0 gives the base model back exactly (`torch.lerp` returns its start for weight 0), A = 1
the fine-tuned one; in between, most of the fine-tuning gain with most of the base model's
accuracy on classes it was not trained on.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def parse_alphas(spec: str) -> tuple[float, ...]:
    """"0,0.25,0.5" -> (0.0, 0.25, 0.5); each in [0, 1] (ValueError otherwise)."""
    values = tuple(float(v) for v in spec.split(",") if v.strip())
    for a in values:
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"merge weights must be in [0, 1], got {a}")
    return values


def merge_tensors(base: torch.Tensor, tuned: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) * base + alpha * tuned, in the base tensor's dtype (non-float tensors: base)."""
    if not base.is_floating_point():
        return base.clone()
    return torch.lerp(base.float(), tuned.float().to(base.device), alpha).to(base.dtype)


def merge_state(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Merged state dict; both must have the same keys and shapes (a plain model, peft merged)."""
    if set(base) != set(tuned):
        diff = sorted(set(base) ^ set(tuned))
        raise ValueError(f"base and tuned models differ in parameters: {diff[:3]}")
    return {k: merge_tensors(base[k], tuned[k], alpha) for k in base}


def merged_model(base: nn.Module, tuned: nn.Module, alpha: float) -> nn.Module:
    """A copy of `tuned` holding the merged weights (`base` and `tuned` are left as they are)."""
    out = copy.deepcopy(tuned)
    out.load_state_dict(merge_state(base.state_dict(), tuned.state_dict(), alpha))
    return out


__all__ = ["merge_state", "merge_tensors", "merged_model", "parse_alphas"]
