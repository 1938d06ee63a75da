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


from .errors import ConfigError
from .files import read_yaml
from .io import DEFAULT_MAX_PIXELS

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
# keys that only some backends read: setting them elsewhere is an error, not a silent no-op
BACKEND_ONLY = {
    **{key: ("clip",) for key in ("proposer", "proposer_weights", "proposals", "region_mode", "crop_context",
                                  "dense_size", "logit_scale", "background_similarity")},
    "objectness_weight": ("clip", "owl"),
    "text_weights": ("yolo_world",),
}
CHOICES = {
    "precision": PRECISIONS,
    "proposer": ("", "owlv2", "yolo", "windows", "boxes"),
    "region_mode": ("crop", "pooled"),
    "scoring": ("native", "softmax", "sigmoid"),
    "tile_merge": ("nms", "nmm"),
    "tile_merge_metric": ("iou", "ios"),
}


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a detector. Presets in `configs/*.yaml` set a subset of these.

    Attributes:
        name: preset name; also the folder name looked up under `weights/`.
        backend: which backend family builds the model (see `ovdet.backends.BUILDERS`):
            "owl" (OWL-ViT/OWLv2), "clip" (proposer + CLIP region scoring), "yolo_world".
        weights: hub id (e.g. "google/owlv2-base-patch16-ensemble"), local folder or file.
        threshold: keep detections with score strictly above this (scores are in [0, 1]).
        class_thresholds: optional YAML file {class name: threshold} overriding `threshold`.
        calibration: optional calibration YAML written by `ovdet calibrate`: scores become
            calibrated probabilities of a true positive (`raw_scores` unchanged) and each class
            gets the file's threshold (a `class_thresholds` entry still wins). Refused for a
            model, scoring or templates other than those it was fitted for.
        calibration_thresholds: use the calibration file's per-class thresholds (False: only
            its scores, cut by `threshold`; `ovdet eval` does this, as AP ranks everything).
        nms_iou: class-aware NMS IoU; 1.0 disables NMS.
        class_agnostic_nms: suppress overlapping boxes across classes too.
        max_detections: most detections returned per image.
        multi_label: report a box once per class scoring above the threshold (not only its
            best class); `ovdet eval` turns it on, since AP rewards it.
        templates: prompt templates applied to each class name before text encoding: a
            built-in set ("single", "photo"; see `ovdet.text.TEMPLATE_SETS`), one template with
            "{}" (e.g. "a photo of a {}"; "{}" = the bare name), or a text file, one per line.
            Several templates are ensembled (mean of unit embeddings, renormalised).
        negatives: comma-separated negative prompts ("toy dog,statue"): scored with the
            classes; a box whose best match is a negative is dropped.
        cache_text: keep vocabulary and image-exemplar embeddings on disk ($OVDET_CACHE,
            ~/.cache/ovdet).
        text_weights: CLIP checkpoint for the text side where the backend needs a separate
            one (YOLO-World); empty = the backend's own text tower.
        proposer: class-agnostic region proposer for the "clip" backend: "owlv2"
            (objectness head), "yolo" (an ultralytics YOLO run class-agnostic), "windows"
            (weight-free multi-scale windows) or "boxes" (only user-supplied boxes).
        proposer_weights: the proposer's checkpoint (hub id, folder or YOLO .pt file).
        proposals: how many proposals per image are scored (top by objectness).
        region_mode: "crop" (each box cropped through the image tower) or "pooled" (one dense
            pass, RoIAlign over patch tokens).
        crop_context: crops are enlarged by this factor around the box (1.0 = tight).
        dense_size: input side of the pooled mode's dense pass (multiple of the patch size).
        scoring: "softmax" (over classes + a background entry), "sigmoid", or "native"
            (the model's own calibrated logits; OWL).
        logit_scale: similarity temperature; 0 = the model's own (100 for OpenAI CLIP).
        background_similarity: cosine similarity at which background wins (softmax) or the
            score is 0.5 (sigmoid).
        example_weight: how much a class's image exemplars count against its text prompt
            when a vocabulary gives both under one name: normalise((1 - w) * text + w *
            exemplars); 1 = the exemplars alone, 0 = the text alone (see `ovdet.exemplars`).
        objectness_weight: w in score = class_score^(1-w) * objectness^w (proposal objectness
            for "clip"; OWLv2's objectness head for "owl"; 0 = off).
        device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
        precision: "fp32", "bf16", "fp16" (CUDA only) or "auto" (the default: bf16 where the
            hardware has fast bf16 matmuls, i.e. CUDA or CPUs with AMX/AVX512-BF16, else fp32).
            The towers (and OWL's head hidden layers) run in it; the layers that output boxes
            and logit shift/scale, and box geometry, stay fp32. fp32 is the reference.
        compile: torch.compile the image tower (first call compiles: tens of seconds). Meant
            for long GPU runs. On a CPU it replaces the fused bf16 tower (`ovdet.cpu_fused`) and
            is slower than it: OWL-ViT B/32 forward 116 ms compiled vs 92 ms fused.
        batch_size: images per forward pass in `detect_batch` and the CLI; with `tile`, tiles
            of one image per forward pass.
        tile: sliced inference: the side in pixels of square tiles cut from each image, each
            run through the model at its input size (small objects in large images); 0 = off.
            Images smaller than a tile on a side give tiles of that side.
        tile_overlap: fraction of `tile` that neighbouring tiles share, in [0, 0.9].
        tile_full_image: also run the whole image (resized as without tiling) and merge its
            detections with the tiles' (SAHI's "standard prediction": large objects).
        tile_merge: how detections of different tiles that overlap are merged: "nms" keeps the
            best, "nmm" (greedy non-maximum merging) grows it to the union of the boxes it
            absorbs. Boxes that touch an inner tile edge (cut objects) rank after whole ones.
        tile_merge_iou: overlap above which two detections of different tiles are one object.
        tile_merge_metric: "iou" (intersection over union) or "ios" (intersection over the
            smaller box: a cut part inside the whole object counts as the same object).
        max_pixels: images with more pixels are refused before decoding, with a one-line error
            (the default takes a 20000 x 20000 image).
        reduced_decode: decode JPEG files, URLs and uploads at the smallest DCT scale (1/2,
            1/4, 1/8; PIL's draft) that keeps twice the model's input size, instead of in full.
            Faster for photos much larger than the input, but the model's input moves by a
            few 8-bit levels from what the stock processor gets, so detections differ slightly
            from those of the same picture passed as an array. Off by default (exact); tiling
            always decodes in full.
        masks: a SAM 2 or SAM checkpoint (preset name, folder or hub id) that gives every
            detection a mask (`Detections.masks`), whatever backend found the boxes; empty =
            no masks (backends with masks of their own give theirs anyway).
        description: one line shown by `ovdet weights list`.
    """

    name: str = ""
    backend: str = "owl"
    weights: str = ""
    threshold: float = 0.1
    class_thresholds: str = ""
    calibration: str = ""
    calibration_thresholds: bool = True
    nms_iou: float = 0.5
    class_agnostic_nms: bool = False
    max_detections: int = 100
    multi_label: bool = False
    templates: str = "{}"
    negatives: str = ""
    cache_text: bool = True
    text_weights: str = ""
    proposer: str = ""
    proposer_weights: str = ""
    proposals: int = 100
    region_mode: str = "crop"
    crop_context: float = 1.2
    dense_size: int = 448
    scoring: str = "native"
    logit_scale: float = 0.0
    background_similarity: float = 0.2
    objectness_weight: float = 0.0
    example_weight: float = 0.5
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    batch_size: int = 4
    tile: int = 0
    tile_overlap: float = 0.2
    tile_full_image: bool = False
    tile_merge: str = "nmm"
    tile_merge_iou: float = 0.5
    tile_merge_metric: str = "ios"
    max_pixels: int = DEFAULT_MAX_PIXELS
    reduced_decode: bool = False
    masks: str = ""
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
        if self.tile != 0 and self.tile < 32:
            raise ConfigError(f"tile must be 0 (off) or at least 32 pixels, got {self.tile}")
        if not 0.0 <= self.tile_overlap <= 0.9:
            raise ConfigError(f"tile_overlap must be a fraction in [0, 0.9], got {self.tile_overlap}")
        if not 0.0 < self.tile_merge_iou <= 1.0:
            raise ConfigError(f"tile_merge_iou must be in (0, 1], got {self.tile_merge_iou}")
        if self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be >= 1, got {self.max_pixels}")
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(repr(a) for a in allowed)}, got {getattr(self, key)!r}")
        if self.proposals < 1 or self.dense_size < 32:
            raise ConfigError(f"proposals must be >= 1 and dense_size >= 32, got {self.proposals} and {self.dense_size}")
        if self.crop_context < 1.0:
            raise ConfigError(f"crop_context must be >= 1 (1 = tight crops), got {self.crop_context}")
        if not 0.0 <= self.example_weight <= 1.0:
            raise ConfigError(f"example_weight must be in [0, 1], got {self.example_weight}")
        if not 0.0 <= self.objectness_weight <= 1.0:
            raise ConfigError(f"objectness_weight must be in [0, 1], got {self.objectness_weight}")
        defaults = DetectorConfig.__dataclass_fields__
        for key, backends in BACKEND_ONLY.items():
            if self.backend not in backends and getattr(self, key) != defaults[key].default:
                raise ConfigError(f"{key} has no effect with backend {self.backend!r} (it is for backend {' or '.join(backends)})")
        if self.backend in ("owl", "yolo_world", "grounding", "omdet") and self.scoring != "native":
            raise ConfigError(f"backend {self.backend!r} scores with its own calibrated head: scoring must be 'native'")

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


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config's mapping of keys to values (an empty file is an empty mapping)."""
    data = read_yaml(path, "config file", expect=(dict, type(None)), error=ConfigError)
    return data or {}


def load_config(source: str | Path | Mapping[str, Any], **overrides: Any) -> DetectorConfig:
    """Build a `DetectorConfig` from a preset name, a YAML path or a mapping, plus overrides.

    A YAML file may start from a preset with `base: owlv2-b16` and change some keys.
    Overrides whose value is None are ignored (so CLI flags left unset keep the preset's value).
    """
    if isinstance(source, Mapping):
        data, where = dict(source), "mapping"
    elif str(source) in preset_names():
        data, where = read_config_file(presets_dir() / f"{source}.yaml"), f"preset {source}"
        data.setdefault("name", str(source))
    else:
        path = Path(source)
        if path.suffix.lower() not in (".yaml", ".yml"):
            close = difflib.get_close_matches(str(source), preset_names(), n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"unknown preset {str(source)!r}{hint} (presets: {', '.join(preset_names())})")
        data, where = read_config_file(path), str(path)
    base = data.pop("base", None)
    if base is not None:
        if str(base) not in preset_names():
            raise ConfigError(f"{where}: base {base!r} is not a preset (presets: {', '.join(preset_names())})")
        merged = read_config_file(presets_dir() / f"{base}.yaml")
        merged.setdefault("name", str(base))
        merged.update(data)
        data = merged
    check_keys(data, where)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    check_keys(overrides, "overrides")
    final = {**data, **overrides}
    preset = final.get("name")
    if preset in preset_names() and "name" not in overrides:
        # `name` selects the weights/<name>/ folder: keep it only while the weights are the
        # preset's own, so `base: owlv2-b16` + other weights never loads OWLv2's folder
        if final.get("weights", "") != read_config_file(presets_dir() / f"{preset}.yaml").get("weights", ""):
            final["name"] = ""
    try:
        return DetectorConfig(**final)
    except ConfigError as exc:
        if overrides and _valid(data):
            # the file or preset is fine: the override (a CLI flag, a keyword) is at fault, and
            # naming the preset would mislead (a checkpoint folder borrows a preset's settings)
            raise ConfigError(str(exc)) from None
        raise ConfigError(f"{where}: {exc}") from None


def _valid(data: Mapping[str, Any]) -> bool:
    try:
        DetectorConfig(**data)
    except (ConfigError, TypeError):
        return False
    return True


def load_class_thresholds(path: str | Path) -> dict[str, float]:
    """Per-class thresholds from a YAML mapping {class name: threshold in [0, 1]}."""
    data = read_config_file(path)
    out: dict[str, float] = {}
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{path}: threshold for {name!r} must be a number in [0, 1], got {value!r}")
        out[str(name).strip()] = float(value)
    return out
