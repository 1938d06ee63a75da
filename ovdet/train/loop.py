"""The optimisation loop: AdamW, linear warm-up then cosine decay, autocast (bf16 / fp16),
Hungarian matching and the OWL loss per image, checkpoints every N steps, DDP-aware.

On a CPU with the same settings and thread count the loop is deterministic, and everything a
step depends on is in the checkpoint, so a run resumed after a SIGKILL ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..progress import progress_bar
from .checkpoint import load_checkpoint_state, restore_rng, save_checkpoint
from .ddp import DistInfo, all_reduce_sum, barrier, wrap
from .losses import TERMS, ImageTarget, image_loss
from .matcher import hungarian_match
from .model import InputFrame, TextSide
from .modes import Setup, trainable_state
from .stream import Stream, StreamItem

WEIGHT_DECAY = 1e-4


@dataclass
class LoopSettings:
    """steps: optimizer steps in all; warmup: linear warm-up steps; precision: fp32 | bf16 |
    fp16 (autocast); save_every: checkpoint period in steps (0: none); checkpoint: its path."""

    steps: int
    warmup: int
    precision: str = "fp32"
    save_every: int = 0
    checkpoint: Path | None = None
    progress: bool = True
    manifest: dict = field(default_factory=dict)


def warmup_cosine(warmup: int, total: int):
    """LR factor at a step: linear from 1/warmup to 1, then cosine down to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def queries(items: list[StreamItem], num_classes: int, learned: bool) -> tuple[list[str], torch.Tensor]:
    """(unique text prompts U, (B, Q) query table rows). With learned class embeddings the C
    trained classes are table rows 0..C-1 and the text rows follow."""
    prompts: dict[str, int] = {}
    offset = num_classes if learned else 0
    rows = []
    for it in items:
        texts = it.prompts[num_classes:] if learned else it.prompts
        idx = [prompts.setdefault(p, len(prompts)) + offset for p in texts]
        rows.append((list(range(num_classes)) if learned else []) + idx)
    return list(prompts), torch.tensor(rows, dtype=torch.long)


class Trainer:
    """One training run over `stream` with a prepared model (`modes.prepare`)."""

    def __init__(self, setup: Setup, processor, stream: Stream, device: torch.device, settings: LoopSettings,
                 info: DistInfo = DistInfo()):
        self.setup, self.stream, self.device, self.settings, self.info = setup, stream, device, settings, info
        self.module = setup.module.to(device)
        self.text = TextSide(self.module, processor, device, frozen=not setup.text_trainable)
        self.frame = InputFrame(processor, device)
        self.model = wrap(self.module, info, device)
        self.optimizer = torch.optim.AdamW(setup.param_groups, weight_decay=WEIGHT_DECAY)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(settings.warmup, settings.steps))
        use_scaler = settings.precision == "fp16" and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.step = 0
        self.losses: list[dict[str, float]] = []

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"step": self.step, "trainable": trainable_state(self.module), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "losses": self.losses,
                "manifest": self.settings.manifest}

    def restore(self, path: Path) -> dict[str, Any]:
        """Continue from a checkpoint file (its manifest is the caller's to check first)."""
        state = load_checkpoint_state(path)
        missing = set(state["trainable"]) - {n for n, _ in self.module.named_parameters()}
        if missing:
            raise KeyError(f"checkpoint parameters not in the model: {sorted(missing)[:3]}")
        self.module.load_state_dict(state["trainable"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.losses = int(state["step"]), list(state["losses"])
        restore_rng(state["rng"])
        return state

    # -- one step ------------------------------------------------------------------------------
    def batch_loss(self, items: list[StreamItem]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(loss to back-propagate, summed terms of this process, global box count)."""
        num_classes = len(self.stream.data.classes)
        learned = self.module.prompts is not None
        prompts, query_index = queries(items, num_classes, learned)
        query_index = query_index.to(self.device)
        query_mask = torch.ones(query_index.shape, dtype=torch.bool, device=self.device)
        text: dict[str, torch.Tensor] = {}
        if self.setup.text_trainable:
            text["input_ids"], text["attention_mask"] = self.text.tokens(prompts)
        else:
            text["text_embeds"] = self.text.embeddings(prompts)
        pixels = self.frame.pixels([it.image for it in items])
        with autocast(self.device, self.settings.precision):
            logits, boxes, objectness = self.model(pixels, query_index, query_mask, **text)
        sums = {t: torch.zeros((), device=self.device) for t in TERMS}
        for b, it in enumerate(items):
            target = ImageTarget(self.frame.normalise(it.boxes, *it.image.shape[:2]),
                                 torch.as_tensor(it.labels, dtype=torch.long, device=self.device), query_mask[b])
            obj = None if objectness is None else objectness[b]
            match = hungarian_match(logits[b].detach().float(), boxes[b].detach().float(), target.labels, target.boxes)
            for term, value in image_loss(logits[b], boxes[b], obj, target, match).items():
                sums[term] = sums[term] + value
        local = torch.tensor(float(sum(len(it.labels) for it in items)), device=self.device)
        num_boxes = all_reduce_sum(local, self.info).clamp(min=1.0)
        # DDP averages gradients over W processes: scaling by W makes it the global sum / boxes
        loss = sum(sums.values()) / num_boxes * self.info.world
        return loss, sums, num_boxes

    def train_step(self) -> dict[str, float]:
        items = self.stream.batch(self.step, self.info.rank, self.info.world)
        loss, sums, num_boxes = self.batch_loss(items)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        terms = torch.stack([sums[t].detach() for t in TERMS])
        terms = all_reduce_sum(terms, self.info) / num_boxes
        logged = {"step": self.step + 1, "loss": float(terms.sum()), **{t: float(v) for t, v in zip(TERMS, terms)}}
        self.step += 1
        return logged

    def run(self) -> list[dict[str, float]]:
        """Train from `self.step` to `settings.steps`; returns the loss log (one entry a step)."""
        s = self.settings
        self.module.train()
        bar = progress_bar(total=s.steps, initial=self.step, desc="train", unit="step",
                           enabled=s.progress and self.info.is_main)
        try:
            while self.step < s.steps:
                logged = self.train_step()
                self.losses.append(logged)
                bar.update(1)
                bar.set_postfix(loss=f"{logged['loss']:.4f}", refresh=False)
                if s.save_every and s.checkpoint is not None and self.step % s.save_every == 0 and self.step < s.steps:
                    if self.info.is_main:
                        save_checkpoint(s.checkpoint, self.state())
                    barrier(self.info)
        finally:
            bar.close()
        self.module.eval()
        return self.losses


__all__ = ["LoopSettings", "Trainer", "autocast", "queries", "warmup_cosine"]
