"""Fine-tuning OWL-ViT / OWLv2 while keeping the open vocabulary (`ovdet train`).

Modules, one job each:
  data        COCO json / YOLO data.yaml / `ovdet label` folder -> TrainData; COCO back out for eval
  augment     flips, crops, 2 x 2 mosaics (seeded per stream position)
  vocab       the generic names random negatives are drawn from
  stream      the data order: augmented image + query prompts at every stream position
  matcher     Hungarian matching (scipy linear_sum_assignment) with focal + L1 + GIoU costs
  losses      sigmoid focal + L1 + GIoU (+ OWLv2 objectness) per image
  model       the training forward (a DDP-wrappable module), text side, input geometry
  modes       prompt | heads | lora | full: what trains, learning rates, saving
  loop        AdamW, warm-up + cosine, autocast, checkpoints, the step loop
  checkpoint  atomic checkpoint files for --resume
  ddp         torch DDP under torchrun (gloo on CPU)
  merge       weight-space ensembling (WiSE-FT)
  report      the forgetting report: AP before / after / merged on trained and probe classes
  api         `train(TrainOptions)`: the whole run
  command     the `ovdet train` subcommand

Heavy imports (torch, transformers, peft) happen inside functions: the CLI parser stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .api import TrainOptions, TrainResult


def __getattr__(name: str):
    if name in ("TrainOptions", "TrainResult", "train"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["TrainOptions", "TrainResult", "train"]
