"""What a user calls a model (preset, YAML, checkpoint folder, export folder, hub id) -> the
`DetectorConfig` that builds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import weights as weights_mod
from .backends import MODEL_TYPES, backend_for_model_type, export_config, is_export_dir, model_type_of
from .config import DetectorConfig, load_config, preset_names
from .errors import ConfigError


def resolve_config(model: str | Path, **overrides: Any) -> DetectorConfig:
    """Turn what a user calls a model into a config.

    `model` may be a preset name ("owlv2-b16"), a YAML config path, a checkpoint folder saved
    with `save_pretrained`, or a hub id ("google/owlv2-base-patch16-ensemble"). Folders and hub
    ids take their settings (threshold, templates...) from the preset of their model family.
    """
    text = str(model)
    path = Path(text).expanduser()
    if text in preset_names() or path.suffix.lower() in (".yaml", ".yml"):
        return load_config(text, **overrides)
    if path.suffix == ".pt":  # an ultralytics checkpoint: YOLO-World settings
        return load_config("yolo-world-s", **{"name": "", "weights": text, "description": "", **overrides})
    if path.is_dir() and is_export_dir(path):  # `ovdet export` output: its manifest has the settings
        return load_config(export_config(path), **{"weights": str(path), **overrides})
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path} is a folder without config.json: not a checkpoint saved with save_pretrained")
        _, base = backend_for_model_type(model_type_of(path), str(path))
        return load_config(base, **{"name": "", "weights": str(path), "description": "", **overrides})
    if weights_mod.looks_like_hub_id(text) and Path(text.split("/")[0]).is_dir():
        # "tiny/owlv2" where ./tiny exists is a mistyped folder, not a hub id to download
        raise ConfigError(f"model not found: {text} does not exist (the folder {text.split('/')[0]}/ does)")
    if weights_mod.looks_like_hub_id(text):
        lowered = text.lower()
        # longest model-type names first, so "owlvit" wins over any shorter name inside it
        for model_type in sorted(MODEL_TYPES, key=len, reverse=True):
            if model_type.replace("-", "") in lowered.replace("-", "").replace("_", ""):
                _, base = backend_for_model_type(model_type, text)
                return load_config(base, **{"name": "", "weights": text, "description": "", **overrides})
        raise ConfigError(
            f"cannot tell which backend serves hub id {text!r}; write a YAML config with `backend:` and `weights:`"
        )
    if "/" in text or "\\" in text or text.startswith(("~", ".")):
        raise ConfigError(f"model not found: {text} is neither an existing folder or file nor a hub id (org/name)")
    return load_config(text, **overrides)  # raises "unknown preset ..." with suggestions


__all__ = ["resolve_config"]
