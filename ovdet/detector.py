"""`Detector`: the orchestrator. A backend (`ovdet.backends`: torch or an ONNX export) scores
images against a class table (`ovdet.vocabulary`); the score policy (`ovdet.score_policy`:
thresholds, calibration, selection) turns the scores into `Detections`. Model names resolve
to configs in `ovdet.model_names`. With a masker (`masks`: SAM 2 / SAM, `ovdet.backends.sam_masker`)
every detection also gets a mask.

    det = Detector.from_pretrained("owlv2-b16")
    dets = det.detect("street.jpg", ["bus", "person", "stroller"])
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from .backends import Backend, build_backend, build_masker, splits_image_pass
from .cache import ExemplarEmbeddingCache, TextEmbeddingCache
from .config import DetectorConfig
from .defaults import DEFAULT_DETECTOR
from .errors import OvdetError
from .exemplars import Example, resolve_vocabulary
from .io import LoadedImage, read_image
from .model_names import resolve_config  # noqa: F401 - commands import it from here too
from .score_policy import ScorePolicy, checked_calibration, to_original_pixels
from .structures import Detections
from .text import resolve_templates
from .vocabulary import ClassTable, ResolvedClasses, resolve_classes

if TYPE_CHECKING:  # torch loads with a torch backend; an ONNX export runs without it
    import torch


class Detector:
    """Open-vocabulary detector: images + class names -> `Detections`.

    Constructed from ready parts (a backend and a config); `from_pretrained` / `from_config`
    are the ways to build one from names and files.
    """

    def __init__(self, backend: Backend, config: DetectorConfig, text_cache: TextEmbeddingCache | None = None,
                 calibration=None, exemplar_cache: ExemplarEmbeddingCache | None = None, *,
                 templates: Sequence[str] | None = None, masker: Any = None):
        """`calibration`: an already checked `ovdet.calibration.Calibration` (default: the
        config's file, checked now); `templates`: the config's, already resolved; `masker`: a
        `SamMasker` that segments every detection's box (None: no masks, unless the backend
        segments by itself)."""
        self.backend = backend
        self.masker = masker
        self.config = config
        self.templates = tuple(templates) if templates is not None else resolve_templates(config.templates)
        self.numpy = bool(getattr(backend, "numpy_arrays", False))  # ONNX backends: numpy, no torch
        if calibration is None:
            calibration = checked_calibration(config, self.templates)
        self.score_policy = ScorePolicy(config, calibration, numpy=self.numpy)
        cache = text_cache if text_cache is not None else (TextEmbeddingCache() if config.cache_text else None)
        if exemplar_cache is None and config.cache_text and hasattr(backend, "embed_exemplars"):
            exemplar_cache = ExemplarEmbeddingCache()
        self.class_table = ClassTable(backend, self.templates, cache, exemplar_cache, config.example_weight,
                                  config.backend, numpy=self.numpy)

    @property
    def vocabulary(self):
        """The text encoder (template ensemble, memory and disk caches): `VocabularyEncoder`."""
        return self.class_table.text

    @property
    def exemplars(self):
        """The image-exemplar encoder, None when the backend's head reads text only."""
        return self.class_table.exemplars

    @property
    def calibration(self):
        """The checked calibration file (`ovdet.calibration.Calibration`) or None."""
        return self.score_policy.calibration

    @property
    def class_thresholds(self) -> dict[str, float]:
        return self.score_policy.class_thresholds

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DetectorConfig) -> "Detector":
        """Build the detector `config` describes: torch weights, or an `ovdet export` folder
        run by onnxruntime (both through `ovdet.backends.build_backend`)."""
        templates = resolve_templates(config.templates)
        # a calibration file for another model fails now, not after loading the weights
        calibration = checked_calibration(config, templates)
        return cls(build_backend(config), config, calibration=calibration, templates=templates,
                   masker=build_masker(config))

    @classmethod
    def from_pretrained(cls, model: str | Path = DEFAULT_DETECTOR, device: str | None = None, **overrides: Any) -> "Detector":
        """Build a detector from a preset name, YAML path, checkpoint folder or hub id.

        Args:
            model: see `resolve_config`.
            device: "auto" (default: cuda if available), "cpu", "cuda", "cuda:N".
            **overrides: any `DetectorConfig` field, e.g. threshold=0.3, nms_iou=1.0,
                precision="bf16", masks="sam2-hiera-tiny" (a mask for every detection).
                Unknown names raise `ConfigError` with a suggestion.
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
            return self.class_table.names_table(items)
        return self.class_table.embed(resolve_vocabulary(items))

    def resolve_classes(self, classes: str | Iterable[Any] | ResolvedClasses,
                        negatives: str | Iterable[str] | None = None) -> ResolvedClasses:
        """`classes` and `negatives` validated once (default negatives: the config's), for
        any number of calls: the detection methods take the result as their `classes`."""
        resolved = resolve_classes(classes, negatives)
        return resolved if resolved.negatives is not None else resolved.with_negatives(self.config.negatives)

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
        classes: str | Iterable[Any] | ResolvedClasses,
        threshold: float | None = None,
        negatives: str | Iterable[str] | None = None,
        boxes: Any = None,
        masks: bool | None = None,
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
            masks: segment the detections (`Detections.masks`): None = when the detector has
                a masker (or its backend segments); False = never; True = always (an error
                without a masker).
        Returns:
            `Detections` with boxes in the original image's pixels, best score first.
        """
        return self.detect_batch([image], classes, threshold, negatives=negatives,
                                 boxes=None if boxes is None else [boxes], masks=masks)[0]

    def detect_batch(
        self,
        images: Sequence[Any],
        classes: str | Iterable[Any] | ResolvedClasses,
        threshold: float | None = None,
        batch_size: int | None = None,
        negatives: str | Iterable[str] | None = None,
        boxes: Sequence[Any] | None = None,
        masks: bool | None = None,
    ) -> list[Detections]:
        """Detect `classes` in several images; forward passes take `batch_size` images each.

        `images` may also be `LoadedImage`s (`Detector.load`, e.g. JPEGs decoded reduced):
        boxes are reported in the pixels of the image itself. `boxes`, if given, holds one
        (N_i, 4) xyxy box list per image. Raises `ImageReadError` for the first unreadable
        image (the CLI reads images itself to skip bad ones and go on).

        With `tile` set, each image is cut into tiles that go through the model `batch_size`
        at a time and are merged back (`ovdet.tiling`); masks are made per tile and merged with
        their boxes. `masks` as in `detect`.
        """
        resolved = self.resolve_classes(classes, negatives)
        names = resolved.names
        thr = self.score_policy.thresholds(names, threshold, self._threshold_device())
        if boxes is not None and len(boxes) != len(images):
            raise OvdetError(f"boxes: got {len(boxes)} box lists for {len(images)} images")
        if boxes is not None and self.config.tile:
            raise OvdetError("given boxes cannot be scored with tiling: set tile to 0")
        class_embeds = self.class_table.embed(resolved.vocabulary, resolved.negatives)
        size = batch_size or self.config.batch_size
        self._check_masks(masks)
        if self.config.tile:
            return [self._detect_tiled(self.load(im), class_embeds, names, thr, size, masks) for im in images]
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
                dets = self.score_policy.finalise(to_original_pixels(cand, image), names, thr)
                results.append(self.segment(dets, image.array, masks))
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
                      thr: float | torch.Tensor, batch_size: int, masks: bool | None = None) -> Detections:
        from .tiling import TileSettings, detect_tiled  # torch: not on an ONNX export's path

        settings = TileSettings.from_config(self.config)
        if max(image.array.shape[:2]) <= settings.tile:  # one tile: exactly the untiled result
            cand = self.backend.predict([image.array], class_embeds)[0]
            return self.segment(self.score_policy.finalise(to_original_pixels(cand, image), names, thr), image.array, masks)
        segment = (lambda tile, dets: self.segment(dets, tile, masks)) if self._wants_masks(masks) else None
        dets = detect_tiled(image.array, lambda crops: self.backend.predict(crops, class_embeds),
                            lambda cand: self.score_policy.finalise(cand, names, thr), settings, batch_size,
                            self.config.max_detections, self.config.class_agnostic_nms, segment=segment)
        return dets if masks is not False else dets.replace(masks=None)

    # -- masks --------------------------------------------------------------------------------
    def _wants_masks(self, masks: bool | None) -> bool:
        return masks is not False and self.masker is not None

    def _check_masks(self, masks: bool | None) -> None:
        if masks and self.masker is None and not getattr(self.backend, "segments", False):
            raise OvdetError("masks were asked for but this detector has no masker: build it with "
                             "masks=\"sam2-hiera-tiny\" (CLI: --masks MODEL)")

    def segment(self, dets: Detections, image: np.ndarray, masks: bool | None = None, cache: dict | None = None) -> Detections:
        """`dets` with the masker's masks of their boxes (in `dets.image_size` pixels; `image`
        is that image as RGB uint8 (h, w, 3), possibly decoded reduced). Masks the backend gave
        are kept; masks=False drops every mask. `cache` (a dict kept with the image, as
        `EncodedImage.cache`) holds the image's SAM embedding for the next call."""
        if masks is False:
            return dets if dets.masks is None else dets.replace(masks=None)
        if dets.masks is not None or self.masker is None:
            return dets
        if not len(dets):
            return dets.replace(masks=self.masker.segment(None, dets.xyxy, dets.image_size))
        encoded = None if cache is None else cache.get("masker")
        if encoded is None:
            encoded = self.masker.encode(image)
            if cache is not None:
                cache["masker"] = encoded
        return dets.replace(masks=self.masker.segment(encoded, dets.xyxy, dets.image_size))

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
        classes: str | Iterable[Any] | ResolvedClasses,
        threshold: float | None = None,
        negatives: str | Iterable[str] | None = None,
        masks: bool | None = None,
    ) -> list[Detections]:
        """Score features from `encode` against one vocabulary: equal to `detect_batch` on the
        same images (thresholds, negatives, post-processing and `masks` as there). The masker's
        image pass runs once per encoded image, whatever the number of vocabularies."""
        self._check_masks(masks)
        resolved = self.resolve_classes(classes, negatives)
        names = resolved.names
        thr = self.score_policy.thresholds(names, threshold, self._threshold_device())
        cands = self.backend.score([e.features for e in encoded], self.class_table.embed(resolved.vocabulary, resolved.negatives))
        return [self.segment(self.score_policy.finalise(to_original_pixels(c, e.image), names, thr), e.image.array, masks,
                             e.cache) for c, e in zip(cands, encoded)]

    def _threshold_device(self):
        return None if self.numpy else self.device


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    """What `Detector.encode` gives per image: the backend's vocabulary-free features and the
    image as decoded (a JPEG may be decoded reduced; boxes go back to its own pixels); `cache`
    keeps the masker's embedding of the image once a call has made it."""

    features: Any
    image: LoadedImage
    cache: dict = dataclasses.field(default_factory=dict, repr=False)


def _torch_given_boxes():
    from .proposers import given_boxes

    return given_boxes
