"""`Detector`: composes a backend with vocabulary handling and post-processing.

    det = Detector.from_pretrained("owlv2-b16")
    dets = det.detect("street.jpg", ["bus", "person", "stroller"])
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from . import weights as weights_mod
from .backends import (BUILDERS, MODEL_TYPES, Backend, RegionScores, backend_for_model_type, model_type_of,
                       splits_image_pass)
from .cache import ExemplarEmbeddingCache, TextEmbeddingCache
from .config import DetectorConfig, load_class_thresholds, load_config, preset_names
from .errors import ConfigError, ExemplarError, OvdetError, OvdetWarning
from .exemplars import Example, ExemplarEncoder, Vocabulary, blend, resolve_vocabulary
from .io import LoadedImage, read_image
from .export.manifest import export_config, is_export_dir
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


def _checked_calibration(config: DetectorConfig, templates: Sequence[str]):
    """The config's calibration file (None when it names none), checked against the model and
    templates it was fitted for (`CalibrationError` otherwise)."""
    if not config.calibration:
        return None
    from .calibrate.calibration_file import load_calibration, model_identity

    calibration = load_calibration(config.calibration)
    calibration.check_model(model_identity(config), templates)
    if calibration.model is None:
        warnings.warn(f"{config.calibration} records no model (fitted on a results file without --model): "
                      "ovdet cannot check that it belongs to this detector", stacklevel=4)
    return calibration


class Detector:
    """Open-vocabulary detector: images + class names -> `Detections`.

    Constructed from ready parts (a backend and a config); `from_pretrained` / `from_config`
    are the ways to build one from names and files.
    """

    def __init__(self, backend: Backend, config: DetectorConfig, text_cache: TextEmbeddingCache | None = None,
                 calibration=None, exemplar_cache: ExemplarEmbeddingCache | None = None):
        self.backend = backend
        self.config = config
        self.templates = resolve_templates(config.templates)
        self.class_thresholds = load_class_thresholds(config.class_thresholds) if config.class_thresholds else {}
        self._warned: set = set()  # unknown class-threshold names and uncalibrated classes, reported once
        # `calibration`: an already checked `ovdet.calibrate.calibration_file.Calibration`
        self.calibration = calibration if calibration is not None else _checked_calibration(config, self.templates)
        cache = text_cache if text_cache is not None else (TextEmbeddingCache() if config.cache_text else None)
        # resolved through the backend at call time, so tests and tools may wrap encode_text
        self.numpy = bool(getattr(backend, "numpy_arrays", False))  # ONNX backends: numpy, no torch
        self.vocabulary = VocabularyEncoder(lambda p: self.backend.encode_text(p), backend.identity, self.templates, cache,
                                            numpy=self.numpy)
        # image exemplars, for backends that can embed them (None: YOLO-World's head reads text only)
        self.exemplars = None
        if hasattr(backend, "embed_exemplars"):
            if exemplar_cache is None and config.cache_text:
                exemplar_cache = ExemplarEmbeddingCache()
            self.exemplars = ExemplarEncoder(lambda i, b: self.backend.embed_exemplars(i, b),
                                             backend.exemplar_identity, exemplar_cache)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DetectorConfig) -> "Detector":
        if config.backend not in BUILDERS:
            raise ConfigError(f"unknown backend {config.backend!r} (available: {', '.join(BUILDERS)})")
        if is_export_dir(config.weights):
            from .onnx_runtime import load_export

            return cls(load_export(config), config)
        # a calibration file for another model fails now, not after loading the weights
        calibration = _checked_calibration(config, resolve_templates(config.templates))
        from .runtime import resolve_device, resolve_precision

        device = resolve_device(config.device)
        dtype = resolve_precision(config.precision, device)
        return cls(BUILDERS[config.backend](config, device, dtype), config, calibration=calibration)

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
    def class_embeddings(self, classes: Sequence[str | Example]) -> torch.Tensor:
        """(C, D) unit embeddings of the classes: names (template ensemble) and/or `Example`s
        (see `ovdet.exemplars`), computed once per vocabulary and exemplar: kept in memory, and
        on disk when `cache_text` is on."""
        items = list(classes)
        if not any(isinstance(c, Example) for c in items):
            embeds = self.vocabulary(tuple(items))
            return embeds if self.numpy else embeds.to(self.device)
        return self._embed(resolve_vocabulary(items), ())

    def _embed(self, vocab: Vocabulary, negatives: tuple[str, ...]) -> torch.Tensor:
        """(C + K, D): the vocabulary's classes, then the K negative prompts."""
        if not vocab.has_examples:
            return self.class_embeddings(vocab.names + negatives)
        import torch
        if self.exemplars is None:
            raise ExemplarError(f"backend {self.config.backend!r} cannot take image exemplars (its head reads text "
                                "embeddings only): use an OWL or CLIP model for classes shown by example")
        texts = vocab.text_names + negatives
        text = self.vocabulary(texts).to(self.device) if texts else torch.zeros(0, device=self.device)
        shown = self.exemplars(vocab.all_examples).to(self.device)
        n = len(vocab.text_names)
        classes = blend(vocab, text[:n], shown, self.config.example_weight)
        return torch.cat([classes, text[n:]]) if negatives else classes

    def _vocabulary(self, classes, negatives) -> tuple[Vocabulary, tuple[str, ...]]:
        """Validated (vocabulary, negative prompts); a negative may not repeat a class."""
        vocab = resolve_vocabulary(classes)
        negatives = self.config.negatives if negatives is None else negatives
        negs = tuple(n.strip() for n in (negatives.split(",") if isinstance(negatives, str) else negatives) if n.strip())
        if negs:
            validate_vocabulary(list(vocab.names) + list(negs))  # duplicates across both are an error
        return vocab, negs

    def _thresholds(self, names: Sequence[str], threshold: float | None) -> float | torch.Tensor:
        """The global threshold, or a (C,) tensor when per-class thresholds apply.

        Per class, in order of precedence: `class_thresholds`; the calibration file's threshold
        (unless `threshold` is passed to the call or `calibration_thresholds` is off); the
        global one. Class names match case-insensitively (as duplicates are judged); names in
        the class-thresholds file that are not in this vocabulary are reported once, with the
        closest class name, since a typo would otherwise silently fall back to the global
        threshold."""
        thr = self.config.threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {thr}")
        per_class: dict[str, float] = {}
        if self.calibration is not None and self.config.calibration_thresholds and threshold is None:
            per_class = {n.casefold(): self.calibration.threshold_for(n) for n in names}
        if not self.class_thresholds and not per_class:
            return thr
        per_class.update({k.casefold(): v for k, v in self.class_thresholds.items()})
        vocab = {n.casefold(): n for n in names}
        unknown = [k for k in self.class_thresholds if k.casefold() not in vocab and k not in self._warned]
        for key in unknown:
            self._warned.add(key)
            close = difflib.get_close_matches(key.casefold(), list(vocab), n=1, cutoff=0.6)
            hint = f" (did you mean {vocab[close[0]]!r}?)" if close else ""
            warnings.warn(f"class_thresholds: {key!r} is not in the vocabulary{hint}; its threshold is unused",
                          OvdetWarning, stacklevel=3)
        values = [per_class.get(n.casefold(), thr) for n in names]
        if self.numpy:
            return np.asarray(values, np.float32)
        import torch

        return torch.tensor(values, device=self.device)

    def _calibrate(self, scores: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """(P, C) scores -> calibrated ones (the calibration file's map per class; classes the
        file lacks take its shared map, reported once)."""
        cal = self.calibration
        new = [n for n in cal.unknown(names) if ("calibration", n) not in self._warned]
        if new:
            self._warned.update(("calibration", n) for n in new)
            warnings.warn(f"calibration {cal.path}: no fit for {', '.join(map(repr, new[:5]))}"
                          f"{' ...' if len(new) > 5 else ''}; using its shared calibration and threshold",
                          OvdetWarning, stacklevel=4)
        return cal.apply_tensor(scores, names)

    # -- images -------------------------------------------------------------------------------
    def decode_size(self, height: int, width: int) -> tuple[int, int] | None:
        """The smallest (h, w) worth decoding a `height` x `width` image at for this model
        (JPEG draft; see `ovdet.io.read_image`); None = full size: always unless the config's
        `reduced_decode` is on (exact pixels by default), and with tiling (tiles need every
        pixel) or when the backend does not say (it crops from the full image)."""
        needed = getattr(self.backend, "decode_size", None)
        off = not self.config.reduced_decode or self.config.tile or needed is None
        return None if off else needed(height, width)

    def load(self, image: Any) -> LoadedImage:
        """Read a path, URL, encoded bytes, PIL image or array for this detector: refused above
        `max_pixels` (one line saying how to raise it); JPEGs decoded in full, or at the size
        the model needs with `reduced_decode`."""
        return read_image(image, self.config.max_pixels, self.decode_size)

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
            classes: class names, as a list or a comma-separated string; the list may mix
                names and `ovdet.Example`s (image exemplars, see `ovdet.exemplars`).
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

        `images` may also be `LoadedImage`s (`Detector.load`, e.g. JPEGs decoded reduced):
        boxes are reported in the pixels of the image itself. `boxes`, if given, holds one
        (N_i, 4) xyxy box list per image. Raises `ImageReadError` for the first unreadable
        image (the CLI reads images itself to skip bad ones and go on).

        With `tile` set, each image is cut into tiles that go through the model `batch_size`
        at a time and are merged back (`ovdet.tiling`).
        """
        vocab, negs = self._vocabulary(classes, negatives)
        names = vocab.names
        thr = self._thresholds(names, threshold)
        if boxes is not None and len(boxes) != len(images):
            raise OvdetError(f"boxes: got {len(boxes)} box lists for {len(images)} images")
        if boxes is not None and self.config.tile:
            raise OvdetError("given boxes cannot be scored with tiling: set tile to 0")
        class_embeds = self._embed(vocab, negs)
        size = batch_size or self.config.batch_size
        if self.config.tile:
            return [self._detect_tiled(self.load(im), class_embeds, names, thr, size) for im in images]
        results: list[Detections] = []
        for start in range(0, len(images), size):
            loaded = [self.load(im) for im in images[start : start + size]]
            arrays = [im.array for im in loaded]
            given = None
            if boxes is not None:
                # ONNX backends check boxes in numpy; `proposers` would load torch
                given_boxes = getattr(self.backend, "given_boxes", None) or _torch_given_boxes()
                given = [given_boxes(b, *a.shape[:2]) for b, a in zip(boxes[start : start + size], arrays)]
            for cand, image in zip(self.backend.predict(arrays, class_embeds, given), loaded):
                results.append(self._finalise(to_original_pixels(cand, image), names, thr))
        return results

    def warmup(self, classes: str | Iterable[Any], size: tuple[int, int] = (720, 1280)) -> float:
        """Pay a run's one-time costs before it is timed; returns the seconds taken.

        The first pass through a model is slow for reasons that have nothing to do with the
        images: oneDNN chooses and builds its kernels for each new input shape (on a CPU in
        bf16 this can take longer than the pass itself), CUDA initialises, and the vocabulary
        is encoded. This runs one full batch (`batch_size` blank (height, width) frames, the
        size the run will see) against `classes`, so the next call runs at the steady rate.
        The results are discarded; the text embeddings stay cached.
        """
        import time

        height, width = size
        blank = np.zeros((max(1, int(height)), max(1, int(width)), 3), np.uint8)
        start = time.perf_counter()
        self.detect_batch([blank] * self.config.batch_size, classes)
        return time.perf_counter() - start

    def _detect_tiled(self, image: LoadedImage, class_embeds: torch.Tensor, names: tuple[str, ...],
                      thr: float | torch.Tensor, batch_size: int) -> Detections:
        from .tiling import TileSettings, detect_tiled  # torch: not on an ONNX export's path

        settings = TileSettings.from_config(self.config)
        if max(image.array.shape[:2]) <= settings.tile:  # one tile: exactly the untiled result
            cand = self.backend.predict([image.array], class_embeds)[0]
            return self._finalise(to_original_pixels(cand, image), names, thr)
        dets = detect_tiled(image.array, lambda crops: self.backend.predict(crops, class_embeds),
                            lambda cand: self._finalise(cand, names, thr), settings, batch_size,
                            self.config.max_detections, self.config.class_agnostic_nms)
        return dets

    # -- two phases: one image pass for images with different vocabularies (ovdet serve) --------
    @property
    def splits_image_pass(self) -> bool:
        """True when the image pass is independent of the vocabulary (OWL, CLIP regions), so
        `encode` + `detect_encoded` apply; False for YOLO-World."""
        return splits_image_pass(self.backend)

    def encode(self, images: Sequence[Any], boxes: Sequence[Any] | None = None) -> list[Any]:
        """Run the vocabulary-free image pass over `images` (all in one forward pass): one
        opaque feature object per image for `detect_encoded`. `boxes` as in `detect_batch`."""
        if not self.splits_image_pass:
            raise OvdetError(f"backend {self.config.backend!r} encodes images together with the vocabulary; use detect_batch")
        loaded = [self.load(im) for im in images]  # decoded as detect_batch decodes them
        arrays = [im.array for im in loaded]
        if boxes is not None and len(boxes) != len(arrays):
            raise OvdetError(f"boxes: got {len(boxes)} box lists for {len(arrays)} images")
        given_boxes = _torch_given_boxes()
        given = None if boxes is None else [given_boxes(b, *a.shape[:2]) for b, a in zip(boxes, arrays)]
        return [EncodedImage(f, im) for f, im in zip(self.backend.encode_images(arrays, given), loaded)]

    def detect_encoded(
        self,
        encoded: Sequence[Any],
        classes: str | Iterable[str],
        threshold: float | None = None,
        negatives: str | Iterable[str] | None = None,
    ) -> list[Detections]:
        """Score features from `encode` against one vocabulary: equal to `detect_batch` on the
        same images (thresholds, negatives and post-processing as there)."""
        vocab, negs = self._vocabulary(classes, negatives)
        names = vocab.names
        thr = self._thresholds(names, threshold)
        cands = self.backend.score([e.features for e in encoded], self._embed(vocab, negs))
        return [self._finalise(to_original_pixels(c, e.image), names, thr) for c, e in zip(cands, encoded)]

    def _finalise(self, cand: RegionScores, names: tuple[str, ...], threshold: float | torch.Tensor) -> Detections:
        cfg = self.config
        c = len(names)
        # boxes that clipping to the image squashed to nothing (e.g. OWLv2 tokens over the
        # padding) describe no object: score 0 never passes the strict threshold
        b = cand.boxes
        valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        scores = drop_negatives(cand.scores, c) * valid[:, None]
        uncalibrated = None
        if self.calibration is not None:
            uncalibrated, scores = scores, self._calibrate(scores, names)
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
        extra = {}
        if uncalibrated is not None:
            extra["uncalibrated_score"] = uncalibrated[sel.index, sel.class_ids].float().cpu().numpy()
        return Detections(
            xyxy=_numpy(cand.boxes[sel.index]),
            scores=_numpy(sel.scores),
            class_ids=_numpy(sel.class_ids).astype(np.int64),
            class_names=names,
            image_size=cand.image_size,
            raw_scores=_numpy(raw).astype(np.float32),
            extra=extra,
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


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    """What `Detector.encode` gives per image: the backend's vocabulary-free features and the
    image as decoded (a JPEG may be decoded reduced; boxes go back to its own pixels)."""

    features: Any
    image: LoadedImage


def to_original_pixels(cand: RegionScores, image: LoadedImage) -> RegionScores:
    """Candidates of an image decoded reduced, moved to the pixels of the image itself."""
    if not image.reduced:
        return cand
    (h, w), (rh, rw) = image.size, image.array.shape[:2]
    if isinstance(cand.boxes, np.ndarray):  # an ONNX export's candidates
        return dataclasses.replace(cand, boxes=cand.boxes * np.float32([w / rw, h / rh, w / rw, h / rh]), image_size=(h, w))
    import torch

    scale = torch.tensor([w / rw, h / rh, w / rw, h / rh], dtype=cand.boxes.dtype, device=cand.boxes.device)
    return dataclasses.replace(cand, boxes=cand.boxes * scale, image_size=(h, w))


def _numpy(values) -> np.ndarray:
    """A torch tensor (any device) or numpy array as a numpy array."""
    if isinstance(values, np.ndarray):
        return values
    values = values.detach().cpu()
    return (values.float() if values.is_floating_point() else values).numpy()  # bf16 has no numpy twin


def _torch_given_boxes():
    from .proposers import given_boxes

    return given_boxes
