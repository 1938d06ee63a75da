"""The calibration YAML: what `ovdet calibrate` writes and every detector command reads.

    format: ovdet-calibration/1
    model: {backend, weights, proposer_weights, text_weights, scores: {scoring, ...}}  # or null
    templates: ["a photo of a {}."]                  # or null (fitted on a results file)
    method: platt
    target: precision=0.9
    shared: {calibration: {method: platt, a: 1.3, b: -2.1}, threshold: 0.41, ...counts}
    classes:
      cat: {category_id: 17, source: class, calibration: {...}, threshold: 0.38, ...}
      dog: {category_id: 18, source: shared, reason: "too few examples ...", threshold: 0.41, ...}
    fitted: {...}    # annotations, images, detections, IoU, settings of the run
    report: {...}    # ECE and Brier before/after, in-sample and cross-validated

A class whose `source` is shared uses the shared calibration and threshold (computed over all
classes pooled). Class names match case-insensitively. `model` identifies the detector the
scores came from (backend, checkpoint, the settings that shape scores) and `templates` the
prompts: scores of another model or prompts mean something else, so the file is refused for
them (`CalibrationError`, one line).

The core reads and applies these files (to torch scores, and to the numpy scores of an ONNX
export); `ovdet.calibrate` fits and writes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from .backends.onnx.manifest import is_export_dir, read_manifest
from .calibrators import Calibrator, from_dict, linear_tensor, logit, sigmoid
from .errors import OvdetError
from .files import atomic_output, read_yaml

FORMAT = "ovdet-calibration/1"
# DetectorConfig keys that change what a score means for the same checkpoint
SCORE_KEYS = ("scoring", "logit_scale", "background_similarity", "objectness_weight", "proposer", "region_mode",
              "crop_context", "dense_size")
SAMPLE_BYTES = 1 << 20  # fingerprint: this many bytes from the start, middle and end of each file


class CalibrationError(OvdetError, ValueError):
    """A calibration file is unreadable, malformed, or was fitted for another model or prompts."""


def weights_fingerprint(source: str) -> str:
    """What identifies a checkpoint: a hub id or asset name as it is; a local folder or file by
    content (sha256 of config.json and of samples of each weight file with their sizes), so a
    copy elsewhere is the same model and a retrained one in the same folder is not."""
    if not source:
        return ""
    path = Path(source).expanduser()
    if not path.exists():
        return source
    files = [path] if path.is_file() else sorted(
        f for f in path.iterdir() if f.name == "config.json" or f.suffix in (".safetensors", ".bin", ".pt"))
    digest = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        digest.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            for offset in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
                fh.seek(offset)
                digest.update(fh.read(SAMPLE_BYTES))
    return "sha256:" + digest.hexdigest()[:20]


def weights_identity(config) -> dict[str, Any]:
    """The backend and checkpoints of a torch `DetectorConfig` (an export records its source's)."""
    identity: dict[str, Any] = {"backend": config.backend, "weights": weights_fingerprint(config.weights or config.name)}
    for key in ("proposer_weights", "text_weights"):
        value = getattr(config, key, "")
        if value:
            identity[key] = weights_fingerprint(value)
    return identity


def model_identity(config) -> dict[str, Any]:
    """The identity of the detector a `DetectorConfig` builds, as recorded in the YAML. An
    `ovdet export` folder is the model it was exported from (its manifest records that
    model's `weights_identity`), so a file fitted on either serves both."""
    recorded = None
    if config.weights and is_export_dir(config.weights):
        recorded = read_manifest(config.weights)["model"].get("weights_identity")
    identity: dict[str, Any] = dict(recorded) if recorded else weights_identity(config)
    identity["scores"] = {key: getattr(config, key) for key in SCORE_KEYS}
    return identity


def _describe(identity: Mapping[str, Any]) -> str:
    return f"{identity.get('backend')} {identity.get('weights')}"


@dataclass(frozen=True)
class ClassEntry:
    """One class of the file. calibrator None = the shared one (source "shared")."""

    name: str
    threshold: float
    source: str = "shared"
    calibrator: Calibrator | None = None
    category_id: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # counts, precision/recall, reason

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.category_id is not None:
            out["category_id"] = int(self.category_id)
        out["source"] = self.source
        if self.calibrator is not None:
            out["calibration"] = self.calibrator.to_dict()
        out["threshold"] = round(float(self.threshold), 6)
        out.update(self.stats)
        return out


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration: per-class (or shared) score maps and thresholds.

    model / templates: what it was fitted for (None: unknown, fitted on a results file).
    """

    method: str
    target: str
    shared: Calibrator
    shared_threshold: float
    classes: dict[str, ClassEntry]
    model: dict[str, Any] | None = None
    templates: tuple[str, ...] | None = None
    shared_stats: dict[str, Any] = field(default_factory=dict)
    fitted: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    by_key: dict[str, ClassEntry] = field(init=False, repr=False, compare=False)  # casefolded names

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {n.casefold(): e for n, e in self.classes.items()})

    # -- lookup ---------------------------------------------------------------------------------
    def entry(self, name: str) -> ClassEntry | None:
        """The class's entry (case-insensitive), None when the file has no such class."""
        return self.by_key.get(name.casefold())

    def calibrator_for(self, name: str) -> Calibrator:
        entry = self.entry(name)
        return entry.calibrator if entry is not None and entry.calibrator is not None else self.shared

    def threshold_for(self, name: str) -> float:
        entry = self.entry(name)
        return entry.threshold if entry is not None else self.shared_threshold

    def unknown(self, names: Sequence[str]) -> list[str]:
        """Names the file has no entry for (they get the shared calibration and threshold)."""
        return [n for n in names if self.entry(n) is None]

    def by_category_id(self) -> dict[int, str]:
        return {e.category_id: name for name, e in self.classes.items() if e.category_id is not None}

    # -- applying -------------------------------------------------------------------------------
    def apply(self, scores: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """(N,) scores with (N,) class names -> (N,) calibrated probabilities."""
        s = np.asarray(scores, dtype=np.float64)
        out = np.empty_like(s)
        names = np.asarray(list(names), dtype=object)
        for name in set(names.tolist()):
            rows = names == name
            out[rows] = self.calibrator_for(name)(s[rows])
        return out

    def apply_scores(self, scores, class_names: Sequence[str]):
        """(P, C) scores of P boxes for C classes -> (P, C) calibrated: a torch tensor through
        `apply_tensor`, a numpy array (an ONNX export's) through `apply_array`."""
        if isinstance(scores, np.ndarray):
            return self.apply_array(scores, class_names)
        return self.apply_tensor(scores, class_names)

    def apply_array(self, scores: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
        """`apply_tensor` on a (P, C) numpy array, without torch: the same maps (in float64,
        as the calibrators' numpy form), float32 out; zero stays zero."""
        s = np.asarray(scores, dtype=np.float32)
        calibrators = [self.calibrator_for(n) for n in class_names]
        if all(hasattr(c, "linear") for c in calibrators):
            a, b = (np.asarray(v, dtype=np.float64) for v in zip(*(c.linear() for c in calibrators)))
            out = sigmoid(a * logit(s) + b)
        else:
            out = np.empty(s.shape, dtype=np.float64)
            for i, c in enumerate(calibrators):
                out[:, i] = c(s[:, i])
        return np.where(s > 0, out, 0.0).astype(np.float32)

    def apply_tensor(self, scores, class_names: Sequence[str]):
        """(P, C) torch scores of P boxes for C classes -> (P, C) calibrated, on their device.

        Temperature and Platt maps of all classes run as one broadcast op with per-class
        parameters; isotonic runs once over every class on the shared map, then per own-fit
        class (a 3,600 x 1,203 OWLv2 x LVIS matrix column by column in numpy took 0.6-1.1 s).
        Zero stays zero: the detector zeroes boxes it rules out (negatives, empty boxes), and a
        calibration (isotonic in particular) may map the lowest scores above a threshold.
        """
        import torch

        s = scores.float()
        calibrators = [self.calibrator_for(n) for n in class_names]
        if all(hasattr(c, "linear") for c in calibrators):
            a, b = (torch.tensor(v, dtype=s.dtype, device=s.device) for v in zip(*(c.linear() for c in calibrators)))
            out = linear_tensor(s, a, b)
        else:
            out = torch.empty_like(s)
            shared = [i for i, c in enumerate(calibrators) if c is self.shared]
            if shared:
                out[:, shared] = self.shared.apply_tensor(s[:, shared])
            for i, c in enumerate(calibrators):
                if c is not self.shared:
                    out[:, i] = c.apply_tensor(s[:, i])
        return torch.where(s > 0, out, torch.zeros_like(out))

    # -- checks ---------------------------------------------------------------------------------
    def check_model(self, identity: Mapping[str, Any], templates: Sequence[str]) -> None:
        """Raise `CalibrationError` when fitted for another model, scoring or templates."""
        where = self.path or "the calibration"
        if self.model is not None:
            for key in sorted(set(self.model) | set(identity)):
                if key == "scores":
                    old, new = self.model.get("scores") or {}, identity.get("scores") or {}
                    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
                    if diff:
                        k = diff[0]
                        raise CalibrationError(
                            f"{where} was fitted with {k}={old.get(k)!r}, this detector has {k}={new.get(k)!r}: "
                            "scores mean something else; refit with ovdet calibrate")
                elif self.model.get(key) != identity.get(key):
                    raise CalibrationError(
                        f"{where} was fitted for model {_describe(self.model)}, not {_describe(identity)} "
                        f"({key} differs): refit with ovdet calibrate for this model")
        if self.templates is not None and tuple(self.templates) != tuple(templates):
            raise CalibrationError(
                f"{where} was fitted with templates {list(self.templates)[:3]}, not {list(templates)[:3]}: "
                "refit with ovdet calibrate, or use the same --templates")

    # -- files ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "templates": None if self.templates is None else list(self.templates),
            "method": self.method,
            "target": self.target,
            "shared": {"calibration": self.shared.to_dict(), "threshold": round(float(self.shared_threshold), 6),
                       **self.shared_stats},
            "classes": {name: entry.to_dict() for name, entry in self.classes.items()},
            "fitted": self.fitted,
            "report": self.report,
        }

    def save(self, path: str | Path) -> Path:
        """Write the YAML atomically."""
        text = yaml.safe_dump(_plain(self.to_dict()), sort_keys=False, allow_unicode=True, width=110)
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return Path(path)


def _plain(value: Any) -> Any:
    """numpy scalars and tuples -> YAML-safe Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration YAML (raises `CalibrationError` with one line)."""
    path = Path(path)
    data = read_yaml(path, "calibration file", error=CalibrationError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CalibrationError(f"{path} is not an ovdet calibration file (no 'format: {FORMAT}'; "
                               "write one with ovdet calibrate)")
    try:
        shared = data["shared"]
        classes = {}
        for name, item in (data.get("classes") or {}).items():
            stats = {k: v for k, v in item.items() if k not in ("category_id", "source", "calibration", "threshold")}
            classes[str(name)] = ClassEntry(
                name=str(name), threshold=_threshold(item["threshold"]), source=str(item.get("source", "shared")),
                calibrator=from_dict(item["calibration"]) if item.get("calibration") else None,
                category_id=item.get("category_id"), stats=stats)
        templates = data.get("templates")
        return Calibration(
            method=str(data.get("method", "")), target=str(data.get("target", "")),
            shared=from_dict(shared["calibration"]), shared_threshold=_threshold(shared["threshold"]),
            classes=classes, model=data.get("model"),
            templates=None if templates is None else tuple(str(t) for t in templates),
            shared_stats={k: v for k, v in shared.items() if k not in ("calibration", "threshold")},
            fitted=data.get("fitted") or {}, report=data.get("report") or {}, path=path,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CalibrationError(f"{path}: malformed calibration file ({type(exc).__name__}: {exc})") from None


def _threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {value!r}")
    return float(value)
