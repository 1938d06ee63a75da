"""Ultralytics YOLO in ovdet: a class-agnostic proposer and the YOLO-World backend.

Both run the ultralytics network (`ultralytics.nn.tasks` modules) directly, without
ultralytics' `Model` / `Predictor` classes: ovdet letterboxes the images (ultralytics'
`LetterBox`, so the network sees what its own predictor would give it), runs one forward pass
per batch, applies ultralytics' NMS and maps boxes back to the original pixels. That keeps
callbacks, result objects, file writing and the predictor's per-vocabulary set-up out of the
way, and makes the whole path work offline.

YOLO-World's classes come from ovdet's text side: the backend encodes prompts with a CLIP
text tower (OpenAI ViT-B/32 by default, the tower YOLO-World was trained with) through
`ovdet.clip.ClipModel`, and writes the unit embeddings straight into the model's text
features. Ultralytics' own `set_classes` is never called: it imports the `clip` package
(installing it from git when missing) and downloads OpenAI's ViT-B/32 weights each time the
vocabulary changes. Here a new vocabulary costs one (cached) text embedding and no download.

Security: ultralytics `.pt` files are pickles, opened with `torch.load(weights_only=False)`;
unpickling runs code chosen by whoever wrote the file. Use only files you trust (the official
ultralytics release assets, or files you trained). Setting `ULTRALYTICS_SAFE_LOAD=1` before
starting makes ultralytics load with `weights_only=True` and an allow-list of its own classes.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..boxes import clip_to_image
from ..clip import ClipModel
from ..config import DetectorConfig
from ..errors import ConfigError, OvdetError, WeightsNotFoundError, first_line
from ..proposers import Proposals
from ..weights import locate, weights_dirs
from .base import RegionScores

DEFAULT_TEXT_WEIGHTS = "openai/clip-vit-base-patch32"  # the text tower YOLO-World was trained with
DEFAULT_IMGSZ = 640  # the input side every ultralytics detection checkpoint was trained at
PROPOSER_TASKS = ("detect", "segment", "pose")  # heads with axis-aligned boxes + class scores

# ----------------------------------------------------------------------------------------------
# Keeping ultralytics offline
# ----------------------------------------------------------------------------------------------

# What ultralytics reads from the environment when it is first imported (ultralytics/utils):
#   YOLO_OFFLINE=1      `ONLINE = is_online()` is False without the DNS look-ups it otherwise
#                       makes at import (one.one.one.one, dns.google; slow where DNS hangs).
#                       ONLINE False disables the Google Analytics events (utils/events.py),
#                       Sentry error reports, the PyPI "new version available" check, and makes
#                       a failed download give up at once instead of retrying 5 + 10 + 20 s.
#   YOLO_AUTOINSTALL=0  `check_requirements` never runs `pip install` / `uv pip install`; it
#                       would otherwise install `clip` from GitHub when ultralytics.nn.text_model
#                       is imported, or any module a checkpoint's pickle names.
_OFFLINE_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}

# Ultralytics functions that reach the network for files; each is replaced by a guard.
_GUARDED = ("safe_download", "get_github_assets", "is_url")

BLOCKED_DOWNLOADS: list[str] = []  # URLs ultralytics tried to fetch and the guard refused
_originals: dict[str, object] = {}
_guard_lock = threading.Lock()
_allow_depth = 0  # > 0 inside `_downloads_allowed()` (only `download_yolo_asset` opens it)


def _blocked(what: str) -> WeightsNotFoundError:
    BLOCKED_DOWNLOADS.append(what)
    return WeightsNotFoundError(
        f"ultralytics tried to download {what}; ovdet keeps ultralytics offline: put the file in weights/ "
        f"(`ovdet weights download <preset>` where the network is reachable) and point the config at it"
    )


def _guarded_safe_download(*args, **kwargs):
    if _allow_depth:
        return _originals["safe_download"](*args, **kwargs)
    raise _blocked(str(args[0] if args else kwargs.get("url", "")).split("?", 1)[0])


def _guarded_get_github_assets(*args, **kwargs):
    if _allow_depth:
        return _originals["get_github_assets"](*args, **kwargs)
    raise _blocked(f"the release list of github.com/{args[0] if args else kwargs.get('repo', 'ultralytics/assets')}")


def _guarded_is_url(url, check: bool = False):
    if check and not _allow_depth:  # check=True sends an HTTP HEAD; offline nothing is reachable
        BLOCKED_DOWNLOADS.append(f"HEAD {str(url).split('?', 1)[0]}")
        return False
    return _originals["is_url"](url, check=check)


_GUARDS = {"safe_download": _guarded_safe_download, "get_github_assets": _guarded_get_github_assets, "is_url": _guarded_is_url}


def ultralytics_offline():
    """Make ultralytics safe to use offline; call before building or running any ultralytics model.

    Idempotent and process-wide. Returns the `ultralytics` module.

    Why each step (read from ultralytics 8.4 sources):
      - Environment, read once when ultralytics is first imported: YOLO_OFFLINE=1 (no DNS
        probe at import; telemetry events, Sentry and the PyPI update check stay off because
        they all require `ONLINE`) and YOLO_AUTOINSTALL=0 (no `pip install` of missing
        requirements). They are forced, not defaulted: ovdet never wants ultralytics online.
      - The same switches patched on the imported modules (`ultralytics.utils.ONLINE`,
        `ultralytics.utils.checks.ONLINE/AUTOINSTALL`, `ultralytics.utils.events.events.enabled`),
        in case the host program imported ultralytics before ovdet set the environment.
      - Downloads are refused, not just made to fail fast: `safe_download` (every weight,
        font and asset file: `attempt_download_asset`, `check_font`, `check_file` end there),
        `get_github_assets` (GitHub API release listing) and `is_url(check=True)` (an HTTP
        HEAD) are replaced by guards on `ultralytics.utils.downloads` and on every already
        imported ultralytics module that bound them by name. A refused download raises
        `WeightsNotFoundError` naming the URL (and is recorded in `BLOCKED_DOWNLOADS`);
        `is_url(check=True)` answers False, as ultralytics does for an unreachable URL.
        `ultralytics.nn.text_model` (ultralytics' own CLIP, which downloads ViT-B/32 weights)
        is never imported by ovdet.
    Side effects ultralytics itself has at import, which this does not change: it writes its
    settings file (~/.config/Ultralytics/settings.json, or $YOLO_CONFIG_DIR), replaces
    `torch.save` by a retrying wrapper, and sets OMP_NUM_THREADS=1 in the environment when unset
    (inherited by child processes; torch's thread pool is unaffected once torch is imported).
    """
    global _originals
    for key, value in _OFFLINE_ENV.items():
        os.environ[key] = value
    import ultralytics
    import ultralytics.utils as ul_utils
    import ultralytics.utils.checks as ul_checks
    import ultralytics.utils.downloads as ul_downloads

    ul_utils.ONLINE = False
    ul_checks.ONLINE = False
    ul_checks.AUTOINSTALL = False
    events = sys.modules.get("ultralytics.utils.events")
    if events is not None:  # imported later it reads the patched ONLINE and stays disabled
        events.events.enabled = False
    with _guard_lock:
        if not _originals:
            _originals = {name: getattr(ul_downloads, name) for name in _GUARDED}
        for name in _GUARDED:
            setattr(ul_downloads, name, _GUARDS[name])
        # modules that did `from ultralytics.utils.downloads import safe_download` hold their own reference
        for mod_name, module in list(sys.modules.items()):
            if module is None or not mod_name.startswith("ultralytics"):
                continue
            for name in _GUARDED:
                if getattr(module, name, None) is _originals[name]:
                    setattr(module, name, _GUARDS[name])
    return ultralytics


@contextlib.contextmanager
def _downloads_allowed():
    """Let ultralytics download (with its retries) inside this block: `ovdet weights download` only."""
    global _allow_depth
    previous = os.environ.get("YOLO_OFFLINE")
    with _guard_lock:
        _allow_depth += 1
    os.environ["YOLO_OFFLINE"] = "0"  # is_online() reads it per call: retry transient failures
    try:
        yield
    finally:
        with _guard_lock:
            _allow_depth -= 1
        if previous is None:
            os.environ.pop("YOLO_OFFLINE", None)
        else:
            os.environ["YOLO_OFFLINE"] = previous


# ----------------------------------------------------------------------------------------------
# Weights files
# ----------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """An exception's first line without ultralytics' "ERROR ❌" decorations."""
    line = first_line(exc)
    line = line.replace("ERROR", "", 1) if line.startswith("ERROR") else line
    return line.lstrip(" ❌️⚠\ufe0f:").strip() or type(exc).__name__


def _presets_using(filename: str) -> list[str]:
    """Shipped presets whose weights or proposer_weights is `filename` (for the fix hint)."""
    from ..config import preset_names, presets_dir, read_yaml

    found = []
    for name in preset_names():
        try:
            data = read_yaml(presets_dir() / f"{name}.yaml")
        except ConfigError:
            continue
        if filename in (str(data.get("weights", "")), str(data.get("proposer_weights", ""))):
            found.append(name)
    return found


def find_yolo_weights(filename_or_path: str | Path, preset: str = "") -> Path:
    """The local file for an ultralytics weights file name or path.

    Looks at, in order: the value itself when it is an existing file; `weights/<file>` (and
    `weights/<preset>/<file>` when a preset is named) under the current directory, then under
    the ovdet checkout; `$OVDET_WEIGHTS/<file>`. Never downloads. Raises `WeightsNotFoundError`
    with one line naming every place looked and how to fix it.

    The file is a pickle (see the module docstring): only use files you trust.
    """
    text = str(filename_or_path).strip()
    if not text:
        raise WeightsNotFoundError("no YOLO weights file configured (set weights / proposer_weights to a .pt file)")
    given = Path(text).expanduser()
    if given.is_file():
        return given
    name = given.name
    candidates = [given] if given.parent != Path(".") or given.is_absolute() else []
    for d in weights_dirs():
        candidates.append(d / name)
        if preset:
            candidates.append(d / preset / name)
    env = os.environ.get("OVDET_WEIGHTS")
    if env:
        candidates.append(Path(env).expanduser() / name)
    for path in candidates:
        if path.is_file():
            return path
    looked = [str(p) for p in candidates] + ([] if env else ["$OVDET_WEIGHTS (unset)"])
    from ..config import preset_names

    presets = [preset] if preset in preset_names() else _presets_using(name)
    if presets:
        fix = f"run `ovdet weights download {presets[0]}` where the network is reachable and copy weights/{name} here"
    else:
        fix = f"download {name} (ultralytics release assets) where the network is reachable and put it in weights/"
    raise WeightsNotFoundError(f"no YOLO weights {name}: looked in {', '.join(looked)}; fix: {fix}")


def download_yolo_asset(filename: str, dest_dir: str | Path) -> Path:
    """Download an ultralytics release asset (e.g. "yolov8s-worldv2.pt") into `dest_dir`.

    Uses ultralytics' own `attempt_download_asset` (GitHub release of ultralytics/assets),
    with ovdet's download guard lifted for the duration. For `ovdet weights download`; nothing
    else in ovdet downloads YOLO files. Returns the file's path; raises `WeightsNotFoundError`
    when the download fails or ultralytics has no such asset.
    """
    ultralytics_offline()
    from ultralytics.utils.downloads import attempt_download_asset

    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(filename).name
    try:
        with _downloads_allowed():
            got = Path(attempt_download_asset(str(target)))
    except Exception as exc:  # requests/urllib/ConnectionError types vary; report in one line
        raise WeightsNotFoundError(f"cannot download {filename}: {_first_line(exc)}") from exc
    if not got.is_file():  # unknown names come back as the (missing) target path
        raise WeightsNotFoundError(
            f"cannot download {filename}: not an ultralytics release asset, or GitHub's release list was unreachable"
        )
    return got


def load_yolo_model(path: Path, device: torch.device):
    """Load an ultralytics checkpoint file as an eval-mode, fused fp32 `nn.Module` on `device`.

    Goes through ultralytics' `load_checkpoint` (legacy module renames, EMA weights, the
    ULTRALYTICS_SAFE_LOAD opt-in). The path must exist (see `find_yolo_weights`), so ultralytics'
    "download when missing" branch is never taken. A pickle: trusted files only.
    """
    ultralytics_offline()
    from ultralytics.nn.tasks import load_checkpoint

    path = Path(path)
    if path.suffix.lower() != ".pt":
        raise ConfigError(f"YOLO weights must be an ultralytics .pt checkpoint, got {path.name}")
    if not path.is_file():
        raise WeightsNotFoundError(f"YOLO weights file not found: {path}")
    try:
        model, _ = load_checkpoint(str(path.resolve()), device="cpu", fuse=False)
    except WeightsNotFoundError:
        raise
    except (OSError, RuntimeError, EOFError, TypeError, ValueError, AttributeError, ImportError) as exc:
        raise WeightsNotFoundError(f"cannot load YOLO checkpoint {path}: {_first_line(exc)}") from exc
    model = model.float().fuse(verbose=False).eval().to(device)  # Conv+BN folded, as ultralytics predicts
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------------------
# Shared image path
# ----------------------------------------------------------------------------------------------


class _YoloRunner:
    """Letterbox -> forward -> NMS -> original-image boxes, for a loaded ultralytics model."""

    def __init__(self, model, device: torch.device, imgsz: int = DEFAULT_IMGSZ, half: bool = False):
        self.model = model
        self.device = device
        self.head = model.model[-1]
        self.stride = int(max(int(model.stride.max()) if hasattr(model, "stride") else 32, 32))
        self.imgsz = int(math.ceil(imgsz / self.stride) * self.stride)  # a multiple of the largest stride
        self.half = half and device.type == "cuda"
        if self.half:
            self.model.half()

    @property
    def end2end(self) -> bool:
        return bool(getattr(self.head, "end2end", False))

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 (H, W, 3) images -> (B, 3, S, S') float in [0, 1], RGB, letterboxed.

        Ultralytics' predictor takes BGR arrays (cv2's order) and flips them to RGB before the
        network; the network itself wants RGB, which is what ovdet images already are, so
        they go in without a flip. Same-shape batches get the minimal stride-padded rectangle
        (the predictor's `rect` mode); mixed shapes are padded to imgsz x imgsz squares.
        """
        from ultralytics.data.augment import LetterBox

        same = len({im.shape for im in images}) == 1
        letterbox = LetterBox(new_shape=(self.imgsz, self.imgsz), auto=same, stride=self.stride)
        boxed = [letterbox(image=np.ascontiguousarray(im)) for im in images]
        x = torch.from_numpy(np.stack(boxed)).to(self.device).permute(0, 3, 1, 2).contiguous()
        return x.half().div_(255) if self.half else x.float().div_(255)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor):
        """The network on a preprocessed batch: ultralytics' raw inference output."""
        return self.model(x)

    def postprocess(self, preds, input_shape: Sequence[int], images: Sequence[np.ndarray], conf: float, iou: float,
                    agnostic: bool, max_det: int, multi_label: bool = False) -> list[torch.Tensor]:
        """Raw output -> per image (N, 6) float32 [x1, y1, x2, y2, confidence, class] in the
        original image's pixels (clipped to it), best first: ultralytics' NMS and box scaling,
        called as its detection predictor calls them."""
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes

        while isinstance(preds, (tuple, list)):  # (y, raw) tuples; segment nests ((y, proto), raw)
            preds = preds[0]
        dets = non_max_suppression(
            preds,
            conf_thres=conf,
            iou_thres=iou,
            agnostic=agnostic,
            multi_label=multi_label,  # a box once per class above conf (what AP rewards)
            max_det=max_det,
            nc=int(self.head.nc),  # segment/pose heads carry extra channels after the classes
            end2end=self.end2end,
            max_time_img=60.0,  # past its time budget ultralytics stops NMS, dropping later images
        )
        out = []
        for det, im in zip(dets, images):
            det = det[:, :6].float()
            h, w = im.shape[:2]
            det[:, :4] = clip_to_image(scale_boxes(tuple(input_shape), det[:, :4].clone(), (h, w)), h, w)
            out.append(det)
        return out

    def run(self, images: Sequence[np.ndarray], conf: float, iou: float, agnostic: bool, max_det: int,
            multi_label: bool = False) -> list[torch.Tensor]:
        """RGB images -> per image (N, 6) [x1, y1, x2, y2, confidence, class] (see `postprocess`)."""
        if self.end2end:  # NMS-free heads (YOLOv10, YOLO26) rank their top-k inside the network
            self.head.max_det = max_det
            self.head.agnostic_nms = agnostic
        x = self.preprocess(images)
        return self.postprocess(self.forward(x), x.shape[2:], images, conf, iou, agnostic, max_det, multi_label)


def _check_images(images: Sequence[np.ndarray]) -> None:
    for im in images:
        if not (isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8):
            shape = getattr(im, "shape", None)
            raise OvdetError(f"YOLO models take RGB uint8 (H, W, 3) arrays, got {type(im).__name__} {shape}")


# ----------------------------------------------------------------------------------------------
# Class-agnostic proposer
# ----------------------------------------------------------------------------------------------


class YoloProposer:
    """Any ultralytics YOLO detector run class-agnostic: boxes and confidences as proposals.

    All classes are merged (a box's objectness is its best class confidence, in [0, 1]) and
    NMS is class-agnostic, so one object gives one proposal whatever the detector calls it.
    Works with detect, segment and pose checkpoints (their boxes) and NMS-free heads.
    """

    def __init__(self, weights: Path, device: torch.device, conf: float = 0.05, iou: float = 0.6,
                 max_det: int = 100, imgsz: int = DEFAULT_IMGSZ, half: bool = False):
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0 or max_det < 1:
            raise ConfigError(f"YOLO proposer needs conf and iou in [0, 1] and max_det >= 1, got {conf}, {iou}, {max_det}")
        model = load_yolo_model(Path(weights), device)
        task = getattr(model, "task", "detect")
        if task not in PROPOSER_TASKS:
            raise ConfigError(f"{Path(weights).name} is a YOLO {task} model; proposals need a detect, segment or pose model")
        self.weights = Path(weights)
        self.device = device
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.runner = _YoloRunner(model, device, imgsz, half)

    def propose(self, images: Sequence[np.ndarray]) -> list[Proposals]:
        """RGB uint8 (H, W, 3) images -> one `Proposals` per image (best first)."""
        if not images:
            return []
        _check_images(images)
        dets = self.runner.run(images, self.conf, self.iou, agnostic=True, max_det=self.max_det)
        return [Proposals(boxes=d[:, :4].contiguous(), objectness=d[:, 4].clamp(0, 1).contiguous()) for d in dets]


def build_yolo_proposer(cfg: DetectorConfig, device: torch.device) -> YoloProposer:
    """The "yolo" proposer of a config: `proposer_weights` (a .pt file), `proposals` per image."""
    path = find_yolo_weights(cfg.proposer_weights, preset=cfg.name)
    return YoloProposer(path, device, max_det=cfg.proposals)


# ----------------------------------------------------------------------------------------------
# YOLO-World backend
# ----------------------------------------------------------------------------------------------


class YoloWorldBackend:
    """YOLO-World (ultralytics `WorldModel`) with class embeddings from ovdet's CLIP text tower.

    `predict` writes the (C, D) unit class embeddings into the model's text features
    (`txt_feats`, shape (1, C, D)), sets the head's class count and the model's names to
    match, runs the network and ultralytics' NMS, and returns each surviving box with its
    confidence in its class's column (0 elsewhere). The confidences are YOLO-World's own
    sigmoid scores, already in [0, 1]; `raw` holds the same values.

    NMS here uses a low confidence floor (`conf`) so the Detector's threshold, per-class
    thresholds and top-k decide what is reported; `iou` and `agnostic` should match the config.
    """

    def __init__(self, model, text: ClipModel, device: torch.device, conf: float = 0.001, iou: float = 0.7,
                 agnostic: bool = False, max_det: int = 300, imgsz: int = DEFAULT_IMGSZ, half: bool = False,
                 weights: str = "", multi_label: bool = False):
        ultralytics_offline()
        from ultralytics.nn.tasks import WorldModel

        if not isinstance(model, WorldModel):
            raise ConfigError(
                f"{weights or 'the model'} is not a YOLO-World model (it has a fixed class list); "
                f"use it as a proposer (backend: clip, proposer: yolo) or pick a yolov8*-worldv2.pt file"
            )
        self.embed_dim = int(model.txt_feats.shape[-1]) if torch.is_tensor(getattr(model, "txt_feats", None)) else 512
        text_dim = int(text.model.config.projection_dim)
        if text_dim != self.embed_dim:
            raise ConfigError(
                f"text_weights give {text_dim}-d text embeddings but YOLO-World takes {self.embed_dim}-d; "
                f"use {DEFAULT_TEXT_WEIGHTS} (the text tower YOLO-World was trained with)"
            )
        self.model = model
        self.text = text
        self.device = device
        self.identity = text.identity  # the text tower alone decides the class embeddings
        self.conf, self.iou, self.agnostic, self.max_det = float(conf), float(iou), bool(agnostic), int(max_det)
        self.multi_label = bool(multi_label)
        self.runner = _YoloRunner(model, device, imgsz, half)
        self._text_set: torch.Tensor | None = None  # the class embeddings now in the model

    @classmethod
    def load(cls, weights: Path, text_weights: Path, device: torch.device, dtype: torch.dtype, **kwargs) -> "YoloWorldBackend":
        """Load a YOLO-World .pt file and a CLIP checkpoint folder (the text tower)."""
        text = ClipModel.load(text_weights, device, dtype)
        model = load_yolo_model(Path(weights), device)
        # the CNN runs fp32 (ultralytics' default) unless fp16 is asked for on CUDA; bf16 would
        # cost box precision (8-bit mantissa: ~2 px steps at 640 px) for little speed-up
        half = dtype == torch.float16 and device.type == "cuda"
        return cls(model, text, device, half=half, weights=Path(weights).name, **kwargs)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(C,) prompts -> (C, D) unit text embeddings from the CLIP text tower (fp32)."""
        return self.text.encode_text(list(prompts))

    def set_text(self, class_embeds: torch.Tensor) -> None:
        """Make the model detect the classes of `class_embeds` (C, D); free when unchanged."""
        if class_embeds.ndim != 2 or class_embeds.shape[1] != self.embed_dim or len(class_embeds) == 0:
            raise OvdetError(
                f"YOLO-World needs (C, {self.embed_dim}) class embeddings with C >= 1, got {tuple(class_embeds.shape)}"
            )
        previous = self._text_set
        if previous is not None and (previous is class_embeds or (
            previous.shape == class_embeds.shape and torch.equal(previous, class_embeds.to(previous.device))
        )):
            return
        feats = F.normalize(class_embeds.detach().float(), dim=-1).to(self.device)
        dtype = next(self.model.parameters()).dtype
        self.model.txt_feats = feats[None].to(dtype)  # (1, C, D): what WorldModel.predict reads
        self.model.model[-1].nc = len(feats)  # the head splits its output by nc
        self.model.names = {i: f"class{i}" for i in range(len(feats))}
        self._text_set = class_embeds.detach().clone()

    def predict(self, images: Sequence[np.ndarray], class_embeds: torch.Tensor, boxes=None) -> list[RegionScores]:
        if boxes is not None:
            raise OvdetError("YOLO-World predicts its own boxes; to score given boxes use a CLIP preset (backend: clip)")
        _check_images(images)
        self.set_text(class_embeds)
        c = len(class_embeds)
        dets = self.runner.run(images, self.conf, self.iou, self.agnostic, self.max_det, self.multi_label) if images else []
        out = []
        for det, im in zip(dets, images):
            h, w = im.shape[:2]
            scores = torch.zeros((len(det), c), dtype=torch.float32, device=det.device)
            scores[torch.arange(len(det), device=det.device), det[:, 5].long()] = det[:, 4].clamp(0, 1)
            out.append(RegionScores(boxes=det[:, :4].contiguous(), scores=scores, raw=scores.clone(), image_size=(h, w)))
        return out


def build_yolo_world(cfg: DetectorConfig, device: torch.device, dtype: torch.dtype) -> YoloWorldBackend:
    """The "yolo_world" backend of a config: `weights` (.pt), `text_weights` (CLIP folder or hub id)."""
    path = find_yolo_weights(cfg.weights, preset=cfg.name)
    text_path = locate("", cfg.text_weights or DEFAULT_TEXT_WEIGHTS).path
    return YoloWorldBackend.load(
        path, text_path, device, dtype,
        iou=cfg.nms_iou, agnostic=cfg.class_agnostic_nms, max_det=max(cfg.max_detections, 300),
        multi_label=cfg.multi_label,
    )


__all__ = [
    "BLOCKED_DOWNLOADS",
    "YoloProposer",
    "YoloWorldBackend",
    "build_yolo_proposer",
    "build_yolo_world",
    "download_yolo_asset",
    "find_yolo_weights",
    "load_yolo_model",
    "ultralytics_offline",
]
