"""Training checkpoints for --resume: DIR/checkpoint/last.pt, written atomically (a temporary
file fsynced, then renamed over the old one), so a SIGKILL at any moment leaves either the
previous checkpoint or the new one, never a torn file.

A checkpoint holds what the run's next steps depend on: the step reached, the trainable
parameters (the frozen ones are the base checkpoint's), the optimizer and scheduler states,
the RNG states (torch, numpy, python), the loss log, and the run's manifest (its settings,
checked by `ovdet.kit.resume.check_manifest` before a resume). The data order needs only the
step (`ovdet.train.stream`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "ovdet-train-checkpoint/1"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "last.pt"


def checkpoint_path(out: Path) -> Path:
    return Path(out) / CHECKPOINT_DIR / CHECKPOINT_FILE


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write `state` (plus the format tag and RNG states) to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, "rng": rng_states(), **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint_state(path: Path) -> dict[str, Any]:
    """The saved state (tensors on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=False)


__all__ = ["CHECKPOINT_DIR", "FORMAT", "checkpoint_path", "load_checkpoint_state", "restore_rng", "save_checkpoint"]
