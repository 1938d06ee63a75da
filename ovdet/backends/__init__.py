"""Model families. One explicit dict of builders: no registration by import side effects.

`build_backend(config)` is the one way in: an `ovdet export` folder runs on onnxruntime without
torch (`onnx`), anything else on the torch builder of its family (`BUILDERS`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..config import DetectorConfig
from ..errors import ConfigError
from ..files import read_json
from ..weights import locate
from .base import Backend, CandidateMasks, RegionScores, TwoPhaseBackend, splits_image_pass
from .onnx.manifest import export_config, is_export_dir

if TYPE_CHECKING:  # torch loads with a builder, not with this table (the ONNX path has none)
    import torch


def _build_owl(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> Backend:
    from .owl import OwlBackend  # imported lazily: transformers is slow to import

    return OwlBackend.load(locate(cfg.name, cfg.weights).path, device, dtype, compile=cfg.compile,
                           objectness_weight=cfg.objectness_weight)


def _build_clip(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> Backend:
    from .clip_regions import build_clip_regions

    return build_clip_regions(cfg, device, dtype)


def _build_yolo_world(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> Backend:
    from .yolo.world import build_yolo_world  # imported lazily: ultralytics is slow to import

    return build_yolo_world(cfg, device, dtype)


def _build_sam3(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> Backend:
    from .sam3 import build_sam3

    return build_sam3(cfg, device, dtype)


def _build_grounding(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> Backend:
    from .grounding import GroundingBackend  # Grounding DINO, MM-GDINO and LLMDet checkpoints

    return GroundingBackend.load(locate(cfg.name, cfg.weights).path, device, dtype)


def _build_omdet(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> Backend:
    from .omdet import OmDetBackend

    return OmDetBackend.load(locate(cfg.name, cfg.weights).path, device, dtype)


# backend name -> builder(config, device, dtype); each builder locates its own checkpoints
BUILDERS: dict[str, Callable[[DetectorConfig, torch.device, torch.dtype], Backend]] = {
    "owl": _build_owl,
    "clip": _build_clip,
    "yolo_world": _build_yolo_world,
    "sam3": _build_sam3,
    "grounding": _build_grounding,
    "omdet": _build_omdet,
}

def build_backend(cfg: DetectorConfig) -> Backend:
    """The backend that runs `cfg`: its `weights` an export folder -> the ONNX backend of the
    family the manifest names (numpy arrays, no torch); else `BUILDERS[cfg.backend]` on the
    config's device and precision."""
    if cfg.backend not in BUILDERS:
        raise ConfigError(f"unknown backend {cfg.backend!r} (available: {', '.join(BUILDERS)})")
    if is_export_dir(cfg.weights):
        from .onnx import load_export  # onnxruntime, imported only for an export

        return load_export(cfg)
    from ..runtime import resolve_device, resolve_precision

    device = resolve_device(cfg.device)
    return BUILDERS[cfg.backend](cfg, device, resolve_precision(cfg.precision, device))


def build_masker(cfg: DetectorConfig):
    """The `SamMasker` (ovdet.backends.sam_masker) that `cfg.masks` names, on the config's
    device and precision; None when it names none."""
    if not cfg.masks:
        return None
    from ..runtime import resolve_device, resolve_precision
    from .sam_masker import SamMasker  # transformers, loaded only when masks are asked for

    device = resolve_device(cfg.device)
    return SamMasker.load(cfg.masks, device, resolve_precision(cfg.precision, device))


# transformers `model_type` of a checkpoint folder -> backend name, and the preset whose
# settings (threshold, prompt...) suit it when the user points at a bare folder or hub id
MODEL_TYPES: dict[str, tuple[str, str]] = {
    "owlvit": ("owl", "owlvit-b32"),
    "owlv2": ("owl", "owlv2-b16"),
    "clip": ("clip", "clip-b32"),  # a bare CLIP folder needs no other checkpoint
    "sam3": ("sam3", "sam3"),
    "sam3_lite_text": ("sam3", "sam3"),
    "grounding-dino": ("grounding", "grounding-dino-tiny"),
    "mm-grounding-dino": ("grounding", "mm-grounding-dino-tiny"),  # LLMDet checkpoints too
    "omdet-turbo": ("omdet", "omdet-turbo"),
}


def model_type_of(folder: Path) -> str:
    """The `model_type` in a checkpoint folder's config.json."""
    config = read_json(Path(folder) / "config.json", "checkpoint config", expect=dict, error=ConfigError)
    return str(config.get("model_type", ""))


def backend_for_model_type(model_type: str, where: str) -> tuple[str, str]:
    """(backend name, base preset) for a transformers model type, or a ConfigError."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"{where}: model type {model_type!r} is not supported (supported: {', '.join(MODEL_TYPES)})"
        )
    return MODEL_TYPES[model_type]


__all__ = ["BUILDERS", "build_backend", "build_masker", "export_config", "is_export_dir", "Backend", "CandidateMasks", "RegionScores", "TwoPhaseBackend", "splits_image_pass", "model_type_of", "backend_for_model_type"]
