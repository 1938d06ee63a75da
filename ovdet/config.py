"""Detector configuration: a frozen dataclass, read from YAML presets or files.

Unknown keys are rejected with the closest valid key, so a typo ("treshold") is an error rather
than a silently ignored setting. `Detector.from_config` is the one place that reads it.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a detector. Presets in `configs/*.yaml` set a subset of these.

    Attributes:
        name: preset name; also the folder name looked up under `weights/`.
        backend: which backend family builds the model (see `ovdet.backends.BUILDERS`).
        weights: hub id (e.g. "google/owlv2-base-patch16-ensemble") or local directory.
        threshold: keep detections with score strictly above this (scores are in [0, 1]).
        nms_iou: class-aware NMS IoU; 1.0 disables NMS.
        class_agnostic_nms: suppress overlapping boxes across classes too.
        max_detections: most detections returned per image.
        prompt: template applied to each class name before text encoding; "{}" = the bare name.
        device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
        precision: "fp32", "bf16", "fp16" (CUDA only) or "auto" (bf16 where the hardware has
            fast bf16 matmuls: CUDA, or CPUs with AMX/AVX512-BF16; else fp32).
        batch_size: images per forward pass in `detect_batch` and the CLI.
        description: one line shown by `ovdet weights list`.
    """

    name: str = ""
    backend: str = "owl"
    weights: str = ""
    threshold: float = 0.1
    nms_iou: float = 0.5
    class_agnostic_nms: bool = False
    max_detections: int = 100
    prompt: str = "{}"
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 4
    description: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = {"str": str, "float": (int, float), "int": int, "bool": bool}[f.type]
            if isinstance(value, bool) and f.type != "bool" or not isinstance(value, expected):
                raise ConfigError(f"config key {f.name!r} must be a {f.type}, got {value!r}")
            if f.type == "float":
                object.__setattr__(self, f.name, float(value))
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"nms_iou must be in (0, 1] (1 disables NMS), got {self.nms_iou}")
        if self.max_detections < 1:
            raise ConfigError(f"max_detections must be >= 1, got {self.max_detections}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if "{}" not in self.prompt:
            raise ConfigError(f"prompt must contain '{{}}' where the class name goes, got {self.prompt!r}")

    def replace(self, **changes: Any) -> "DetectorConfig":
        """A copy with `changes` applied; unknown keys are rejected like in files."""
        check_keys(changes, "override")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def valid_keys() -> list[str]:
    return [f.name for f in fields(DetectorConfig)]


def check_keys(data: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError naming the first unknown key and the closest valid ones."""
    keys = valid_keys()
    for key in data:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r} in {where}{hint} (valid keys: {', '.join(keys)})")


def presets_dir() -> Path:
    """Folder of the shipped presets (`ovdet/configs/`; the repository's `configs/` links to it)."""
    return Path(__file__).resolve().parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot read config {path}: {reason}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a YAML mapping of keys to values, got {type(data).__name__}")
    return data


def load_config(source: str | Path | Mapping[str, Any], **overrides: Any) -> DetectorConfig:
    """Build a `DetectorConfig` from a preset name, a YAML path or a mapping, plus overrides.

    A YAML file may start from a preset with `base: owlv2-b16` and change some keys.
    Overrides whose value is None are ignored (so CLI flags left unset keep the preset's value).
    """
    if isinstance(source, Mapping):
        data, where = dict(source), "mapping"
    elif str(source) in preset_names():
        data, where = read_yaml(presets_dir() / f"{source}.yaml"), f"preset {source}"
        data.setdefault("name", str(source))
    else:
        path = Path(source)
        if path.suffix.lower() not in (".yaml", ".yml"):
            close = difflib.get_close_matches(str(source), preset_names(), n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"unknown preset {str(source)!r}{hint} (presets: {', '.join(preset_names())})")
        data, where = read_yaml(path), str(path)
    base = data.pop("base", None)
    if base is not None:
        if str(base) not in preset_names():
            raise ConfigError(f"{where}: base {base!r} is not a preset (presets: {', '.join(preset_names())})")
        merged = read_yaml(presets_dir() / f"{base}.yaml")
        merged.setdefault("name", str(base))
        merged.update(data)
        data = merged
    check_keys(data, where)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    check_keys(overrides, "overrides")
    try:
        return DetectorConfig(**{**data, **overrides})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
