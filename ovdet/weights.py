"""Where checkpoints come from: local folders first, then the Hugging Face cache, then the hub.

Resolution order for a config with preset name N and weights W (a hub id or a folder):
  1. W itself, when it is an existing local folder (explicit path);
  2. `weights/N/` under the current directory, then under the ovdet checkout, then
     `$OVDET_WEIGHTS/N/`; then the same for the other presets whose checkpoint is W and for
     W's last part (`weights/owlv2-base-patch16-ensemble/`), so components are shared;
  3. the Hugging Face hub cache (`HF_HOME`, default ~/.cache/huggingface), without network;
  4. a download from the hub, unless `HF_HUB_OFFLINE=1`.
Every path ends in a local folder that the backend loads with `from_pretrained(folder)`, so
tests that save tiny models to a folder exercise the same loading code as real checkpoints.

Only safetensors and JSON/text files are fetched; `.bin` is a last resort for checkpoints that
have no safetensors, and transformers opens it with `torch.load(weights_only=True)`, which
refuses arbitrary pickled objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsNotFoundError, first_line

CHECKPOINT_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.model"]
FALLBACK_PATTERNS = ["pytorch_model.bin"]
REPO_ROOT = Path(__file__).resolve().parent.parent


def is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def weights_dirs() -> list[Path]:
    """The `weights/` folders searched, most specific first (cwd, then the checkout)."""
    dirs = [Path.cwd() / "weights", REPO_ROOT / "weights"]
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Located:
    """A checkpoint folder and how it was found (shown by `ovdet weights list`)."""

    path: Path
    source: str  # "path", "weights/", "OVDET_WEIGHTS", "hub cache", "download"


def _local_candidates(name: str, weights: str) -> list[tuple[Path, str]]:
    candidates: list[tuple[Path, str]] = []
    if weights and (Path(weights).expanduser().exists() or not looks_like_hub_id(weights)):
        candidates.append((Path(weights).expanduser(), "path"))
    names = ([name] if name else []) + aliases(weights, exclude=name)
    env = os.environ.get("OVDET_WEIGHTS")
    for n in names:
        candidates += [(d / n, "weights/") for d in weights_dirs()]
        if env:
            candidates.append((Path(env).expanduser() / n, "OVDET_WEIGHTS"))
    return candidates


def aliases(weights: str, exclude: str = "") -> list[str]:
    """Other folder names under weights/ that may hold the hub id `weights`: every preset
    whose main checkpoint it is (so `ovdet weights download owlv2-b16` also serves presets
    that use OWLv2 as their proposer), then the hub id's last part."""
    if not weights or not looks_like_hub_id(weights):
        return []
    from .config import load_config, preset_names  # local: config does not depend on weights

    names = [p for p in preset_names() if p != exclude and load_config(p).weights == weights]
    return names + [weights.split("/")[-1]]


def looks_like_hub_id(weights: str) -> bool:
    """"org/name" with no leading '.', '/' or '~' and exactly one slash."""
    return weights.count("/") == 1 and not weights.startswith((".", "/", "~")) and "\\" not in weights


def _hub_cache(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=CHECKPOINT_PATTERNS))
    except Exception:  # not cached: huggingface_hub raises several error types for this
        return None
    return path if is_checkpoint_dir(path) else None


def locate(name: str, weights: str, download: bool = True) -> Located:
    """Find the checkpoint folder for a preset `name` / `weights` (see the module docstring).

    Raises `WeightsNotFoundError`: one line that leads with the fix; its `details` list every
    place looked (the CLI prints them with --debug).
    """
    if weights and (Path(weights).expanduser() / "manifest.json").is_file():  # an `ovdet export` folder
        raise WeightsNotFoundError(f"{weights} is an ONNX export: detection (detect, video, eval, Detector) runs it; "
                                   "for this command use the torch checkpoint it was exported from")
    looked: list[str] = []
    for path, source in _local_candidates(name, weights):
        if is_checkpoint_dir(path):
            return Located(path, source)
        looked.append(str(path))
    if not os.environ.get("OVDET_WEIGHTS"):
        looked.append("$OVDET_WEIGHTS (unset)")
    if weights and looks_like_hub_id(weights) and not Path(weights).exists():
        cached = _hub_cache(weights)
        if cached is not None:
            return Located(cached, "hub cache")
        looked.append(f"the Hugging Face cache for {weights}")
        if download and not offline():
            try:
                return Located(fetch(weights), "download")
            except Exception as exc:  # network errors come in many types; report, don't crash
                looked.append(f"the hub ({type(exc).__name__}: {first_line(exc)[:120]})")
        elif download:
            looked.append("the hub (skipped: HF_HUB_OFFLINE=1)")
    label = name or weights or "<no weights configured>"
    # the fix first and the line short; every place looked goes to the details (--debug)
    fix = (
        f"run `ovdet weights download {name}` where the hub is reachable and copy weights/{name}/ here"
        if name
        else "pass --model a folder saved by save_pretrained, or a reachable hub id"
    )
    raise WeightsNotFoundError(
        f"{fix}: no checkpoint for {label} on this machine (--debug: places looked)",
        details="ovdet looked in:\n  " + "\n  ".join(looked),
    )


def fetch(repo_id: str, local_dir: Path | None = None) -> Path:
    """Download a checkpoint (safetensors + configs) from the hub; returns the folder."""
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(repo_id, local_dir=local_dir, allow_patterns=CHECKPOINT_PATTERNS))
    if not any(path.glob("*.safetensors")):
        path = Path(snapshot_download(repo_id, local_dir=local_dir, allow_patterns=FALLBACK_PATTERNS))
    if not is_checkpoint_dir(path):
        raise WeightsNotFoundError(f"{repo_id} has no config.json: is it a transformers checkpoint?")
    return path


def checkpoint_identity(path: Path) -> str:
    """A string that changes when the checkpoint files change (path, sizes, mtimes).

    Used as part of on-disk cache keys; cheaper than hashing hundreds of MB of weights.
    """
    path = Path(path).resolve()
    parts = [str(path)]
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) + sorted(path.glob("config.json")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def load_checkpoint(path: Path, model_class, what: str):
    """Load (model, processor, identity) from a checkpoint folder with transformers.

    `model_class` is a transformers class (or Auto class) with `from_pretrained`; `identity`
    comes from `checkpoint_identity`. Missing, corrupt or mismatched files become one
    `WeightsNotFoundError` line naming the folder.
    """
    from safetensors import SafetensorError
    from transformers import AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in a CLI
    try:
        processor = AutoProcessor.from_pretrained(str(path))
        model = model_class.from_pretrained(str(path))
    except (OSError, ValueError, SafetensorError) as exc:
        raise WeightsNotFoundError(f"cannot load {what} checkpoint from {path}: {first_line(exc)}") from exc
    return model, processor, checkpoint_identity(Path(path))
