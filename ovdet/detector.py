"""`Detector`: composes a backend with vocabulary handling and post-processing.

    det = Detector.from_pretrained("owlv2-b16")
    dets = det.detect("street.jpg", ["bus", "person", "stroller"])
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from . import weights as weights_mod
from .backends import BUILDERS, MODEL_TYPES, Backend, RegionScores, backend_for_model_type, model_type_of
from .cache import TextEmbeddingCache
from .config import DetectorConfig, load_class_thresholds, load_config, preset_names
from .errors import ConfigError, OvdetError
from .export.manifest import export_config, is_export_dir
from .io import load_image
from .postprocess import select_detections
from .scoring import drop_negatives
from .structures import Detections
from .text import VocabularyEncoder, resolve_templates, validate_vocabulary

if TYPE_CHECKING:  # torch loads with a torch backend; an ONNX export runs without it
    import torch


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
            if model_type in lowered.replace("-", "").replace("_", ""):
                _, base = backend_for_model_type(model_type, text)
                return load_config(base, **{"name": "", "weights": text, "description": "", **overrides})
        raise ConfigError(
            f"cannot tell which backend serves hub id {text!r}; write a YAML config with `backend:` and `weights:`"
        )
    if "/" in text or "\\" in text or text.startswith(("~", ".")):
        raise ConfigError(f"model not found: {text} is neither an existing folder or file nor a hub id (org/name)")
    return load_config(text, **overrides)  # raises "unknown preset ..." with suggestions


class Detector:
    """Open-vocabulary detector: images + class names -> `Detections`.

    Constructed from ready parts (a backend and a config); `from_pretrained` / `from_config`
    are the ways to build one from names and files.
    """

    def __init__(self, backend: Backend, config: DetectorConfig, text_cache: TextEmbeddingCache | None = None):
        self.backend = backend
        self.config = config
        self.templates = resolve_templates(config.templates)
        self.class_thresholds = load_class_thresholds(config.class_thresholds) if config.class_thresholds else {}
        self._warned: set[str] = set()  # class-threshold names already reported as unknown
        cache = text_cache if text_cache is not None else (TextEmbeddingCache() if config.cache_text else None)
        # resolved through the backend at call time, so tests and tools may wrap encode_text
        self.numpy = bool(getattr(backend, "numpy_arrays", False))  # ONNX backends: numpy, no torch
        self.vocabulary = VocabularyEncoder(lambda p: self.backend.encode_text(p), backend.identity, self.templates, cache,
                                            numpy=self.numpy)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DetectorConfig) -> "Detector":
        if config.backend not in BUILDERS:
            raise ConfigError(f"unknown backend {config.backend!r} (available: {', '.join(BUILDERS)})")
        if is_export_dir(config.weights):
            from .onnx_runtime import load_export

            return cls(load_export(config), config)
        from .runtime import resolve_device, resolve_precision

        device = resolve_device(config.device)
        dtype = resolve_precision(config.precision, device)
        return cls(BUILDERS[config.backend](config, device, dtype), config)

    @classmethod
    def from_pretrained(cls, model: str | Path = "owlv2-b16", device: str | None = None, **overrides: Any) -> "Detector":
        """Build a detector from a preset name, YAML path, checkpoint folder or hub id.

        Args:
            model: see `resolve_config`.
            device: "auto" (default: cuda if available), "cpu", "cuda", "cuda:N".
            **overrides: any `DetectorConfig` field, e.g. threshold=0.3, nms_iou=1.0,
                precision="bf16". Unknown names raise `ConfigError` with a suggestion.
        """
        return cls.from_config(resolve_config(model, device=device, **overrides))

    @property
    def device(self) -> torch.device:
        return self.backend.device

    # -- text ---------------------------------------------------------------------------------
    def class_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """(C, D) unit embeddings of the class names (template ensemble), computed once per
        vocabulary: kept in memory, and on disk when `cache_text` is on."""
        embeds = self.vocabulary(names)
        return embeds if self.numpy else embeds.to(self.device)

    def _vocabulary(self, classes, negatives) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Validated (class names, negative prompts); a negative may not repeat a class."""
        names = validate_vocabulary(classes)
        negatives = self.config.negatives if negatives is None else negatives
        negs = tuple(n.strip() for n in (negatives.split(",") if isinstance(negatives, str) else negatives) if n.strip())
        if negs:
            validate_vocabulary(list(names) + list(negs))  # duplicates across both are an error
        return names, negs

    def _thresholds(self, names: Sequence[str], threshold: float | None) -> float | torch.Tensor:
        """The global threshold, or a (C,) tensor when per-class thresholds are configured.

        Class names match case-insensitively (as duplicates are judged); names in the file
        that are not in this vocabulary are reported once, with the closest class name, since
        a typo would otherwise silently fall back to the global threshold."""
        thr = self.config.threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {thr}")
        if not self.class_thresholds:
            return thr
        by_key = {k.casefold(): v for k, v in self.class_thresholds.items()}
        vocab = {n.casefold(): n for n in names}
        unknown = [k for k in self.class_thresholds if k.casefold() not in vocab and k not in self._warned]
        for key in unknown:
            self._warned.add(key)
            close = difflib.get_close_matches(key.casefold(), list(vocab), n=1, cutoff=0.6)
            hint = f" (did you mean {vocab[close[0]]!r}?)" if close else ""
            warnings.warn(f"class_thresholds: {key!r} is not in the vocabulary{hint}; its threshold is unused",
                          stacklevel=3)
        values = [by_key.get(n.casefold(), thr) for n in names]
        if self.numpy:
            return np.asarray(values, np.float32)
        import torch

        return torch.tensor(values, device=self.device)

    # -- detection ----------------------------------------------------------------------------
    def detect(
        self,
        image: Any,
        classes: str | Iterable[str],
        threshold: float | None = None,
        negatives: str | Iterable[str] | None = None,
        boxes: Any = None,
    ) -> Detections:
        """Detect `classes` in one image.

        Args:
            image: a path, PIL image, or RGB uint8 (H, W, 3) array (gray, RGBA and 16-bit work).
            classes: class names, as a list or a comma-separated string.
            threshold: score cut in [0, 1]; default the config's.
            negatives: prompts that must NOT be reported ("toy dog,statue"); a box whose best
                match is a negative is dropped. Default: the config's `negatives`.
            boxes: optional (N, 4) xyxy pixel boxes to score instead of proposals (CLIP
                backends).
        Returns:
            `Detections` with boxes in the original image's pixels, best score first.
        """
        return self.detect_batch([image], classes, threshold, negatives=negatives,
                                 boxes=None if boxes is None else [boxes])[0]

    def detect_batch(
        self,
        images: Sequence[Any],
        classes: str | Iterable[str],
        threshold: float | None = None,
        batch_size: int | None = None,
        negatives: str | Iterable[str] | None = None,
        boxes: Sequence[Any] | None = None,
    ) -> list[Detections]:
        """Detect `classes` in several images; forward passes take `batch_size` images each.

        `boxes`, if given, holds one (N_i, 4) xyxy box list per image. Raises
        `ImageReadError` for the first unreadable image (the CLI reads images itself to skip
        bad ones and go on).
        """
        names, negs = self._vocabulary(classes, negatives)
        thr = self._thresholds(names, threshold)
        if boxes is not None and len(boxes) != len(images):
            raise OvdetError(f"boxes: got {len(boxes)} box lists for {len(images)} images")
        class_embeds = self.class_embeddings(names + negs)
        size = batch_size or self.config.batch_size
        results: list[Detections] = []
        for start in range(0, len(images), size):
            arrays = [load_image(im) for im in images[start : start + size]]
            given = None
            if boxes is not None:
                # ONNX backends check boxes in numpy; `proposers` would load torch
                given_boxes = getattr(self.backend, "given_boxes", None) or _torch_given_boxes()
                given = [given_boxes(b, *a.shape[:2]) for b, a in zip(boxes[start : start + size], arrays)]
            for cand in self.backend.predict(arrays, class_embeds, given):
                results.append(self._finalise(cand, names, thr))
        return results

    def _finalise(self, cand: RegionScores, names: tuple[str, ...], threshold: float | torch.Tensor) -> Detections:
        cfg = self.config
        c = len(names)
        # boxes that clipping to the image squashed to nothing (e.g. OWLv2 tokens over the
        # padding) describe no object: score 0 never passes the strict threshold
        b = cand.boxes
        valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        scores = drop_negatives(cand.scores, c) * valid[:, None]
        sel = select_detections(
            cand.boxes,
            scores,
            threshold=threshold,
            nms_iou=cfg.nms_iou,
            class_agnostic_nms=cfg.class_agnostic_nms,
            max_detections=cfg.max_detections,
            multi_label=cfg.multi_label,
        )
        raw = cand.raw[:, :c][sel.index, sel.class_ids]
        return Detections(
            xyxy=_numpy(cand.boxes[sel.index]),
            scores=_numpy(sel.scores),
            class_ids=_numpy(sel.class_ids).astype(np.int64),
            class_names=names,
            image_size=cand.image_size,
            raw_scores=_numpy(raw).astype(np.float32),
        )

    # -- video --------------------------------------------------------------------------------
    def stream(self, source: Any, classes: str | Iterable[str], track: bool = False, every: int = 1, **options: Any):
        """Detect `classes` in every frame of a video file, webcam index, rtsp/http(s) URL or
        folder/glob of frames, lazily: yields `ovdet.video.FrameRecord`s (index, timestamp,
        frame (H, W, 3) RGB uint8, detections in xyxy pixels). `track` adds ByteTrack ids;
        `every=N` runs the detector on every Nth frame and lets the tracker carry boxes in
        between. Options as in `ovdet.video.stream.stream` (batch_size, smooth, max_frames,
        fps, reconnect, ...)."""
        from .video.stream import stream

        return stream(self, source, classes, track=track, every=every, **options)


def _numpy(values) -> np.ndarray:
    """A torch tensor (any device) or numpy array as a numpy array."""
    if isinstance(values, np.ndarray):
        return values
    values = values.detach().cpu()
    return (values.float() if values.is_floating_point() else values).numpy()  # bf16 has no numpy twin


def _torch_given_boxes():
    from .proposers import given_boxes

    return given_boxes
