"""Learned class embeddings stored in a checkpoint folder (`ovdet train --mode prompt`).

A prompt-tuned model is the base checkpoint unchanged plus one file,
`learned_classes.safetensors`: a (C, D) float32 tensor "embeddings" (unit rows, in the space
of the text tower's projected embeddings) and the class names in its metadata. A backend that
finds the file (`load_learned`) hands the table to the `ClassTable`, which uses a learned row
instead of the template ensemble for a class of that name (`apply_learned`); every other name
is encoded from text as before, so its detections are the base model's, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

LEARNED_FILE = "learned_classes.safetensors"


def save_learned(folder: str | Path, names: Sequence[str], embeds: "torch.Tensor") -> Path:
    """Write (C, D) `embeds` for `names` into `folder` (normalised to unit rows, float32)."""
    import torch.nn.functional as F
    from safetensors.torch import save_file

    if len(names) != embeds.shape[0]:
        raise ValueError(f"{len(names)} names for {embeds.shape[0]} embeddings")
    path = Path(folder) / LEARNED_FILE
    tmp = path.with_suffix(".tmp")
    table = F.normalize(embeds.detach().float().cpu(), dim=-1).contiguous()
    save_file({"embeddings": table}, str(tmp), metadata={"names": json.dumps(list(names))})
    tmp.replace(path)
    return path


def load_learned(folder: str | Path) -> dict[str, "torch.Tensor"] | None:
    """{casefolded class name: (D,) unit embedding} from `folder`'s learned file, or None when
    the folder has none. A malformed file is a `ConfigError`."""
    path = Path(folder) / LEARNED_FILE
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = json.loads((f.metadata() or {})["names"])
            table = f.get_tensor("embeddings")
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a learned class-embedding file ({type(exc).__name__}: {exc})") from exc
    if len(names) != table.shape[0]:
        raise ConfigError(f"{path}: {len(names)} names for {table.shape[0]} embeddings")
    return {str(name).strip().casefold(): table[i] for i, name in enumerate(names)}


def apply_learned(names: Sequence[str], table: "torch.Tensor", learned: Mapping[str, "torch.Tensor"] | None):
    """(N, D) text-encoded rows for `names` -> the same with learned rows for the learned names
    (a new tensor; `table`, often a cached one, is left as it is)."""
    if not learned:
        return table
    rows = [i for i, name in enumerate(names) if name.strip().casefold() in learned]
    if not rows:
        return table
    out = table.clone()
    for i in rows:
        out[i] = learned[names[i].strip().casefold()].to(out)
    return out


__all__ = ["LEARNED_FILE", "apply_learned", "load_learned", "save_learned"]
