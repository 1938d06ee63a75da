"""Training and validation data: a COCO annotation file, a YOLO `data.yaml` or an `ovdet label`
output folder -> `TrainData` (image paths, xyxy pixel boxes, class indices), and back to a
COCO file for evaluation (`write_coco`).

    data = load_data("dataset/coco/train.json")          # images beside it, or images=DIR
    val = load_data("dataset/")                          # ovdet label folder: coco/ or yolo/
    train, val = split_data(data, 0.2, seed=0)           # --val 0.2
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import OvdetError


class DataError(OvdetError, ValueError):
    """DATA / --val is missing, in an unknown format, or describes no usable image."""


@dataclass(frozen=True)
class Sample:
    """One training image: `path`; `boxes` (N, 4) float32 xyxy pixels of the image as stored
    (EXIF orientation applied); `labels` (N,) int64 indices into `TrainData.classes`."""

    path: str
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class TrainData:
    """Class names (their order gives the label indices) and samples."""

    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    source: str

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_boxes(self) -> int:
        return int(sum(len(s.labels) for s in self.samples))


def _coco_image_path(image: dict, images_dir: Path) -> Path:
    from ..eval.runner import image_path

    given = image.get("path")  # `ovdet label` records each source image's absolute path
    if isinstance(given, str) and Path(given).is_file():
        return Path(given)
    return image_path(images_dir, image)


def read_coco(path: Path, images: Path | None = None) -> TrainData:
    """A COCO annotation file; images in `images` (default: the file's folder). Crowd boxes and
    boxes without area are left out; images not found are an error naming the first."""
    from ..eval.dataset import Dataset, load_dataset

    dataset = load_dataset(path)
    images_dir = Path(images) if images is not None else path.parent
    index = {cat["id"]: i for i, cat in enumerate(dataset.categories)}
    per_image: dict[int, list[dict]] = {img["id"]: [] for img in dataset.images}
    for ann in dataset.data["annotations"]:
        x, y, w, h = ann["bbox"]
        if not ann.get("iscrowd", 0) and w > 0 and h > 0:
            per_image[ann["image_id"]].append(ann)
    samples = []
    for image in dataset.images:
        file = _coco_image_path(image, images_dir)
        if not file.is_file():
            raise DataError(f"{path}: image {Dataset.file_name(image)!r} not found in {images_dir} (give the folder with --images)")
        anns = per_image[image["id"]]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([index[a["category_id"]] for a in anns], np.int64)
        samples.append(Sample(str(file), boxes, labels))
    return TrainData(tuple(c["name"] for c in dataset.categories), tuple(samples), str(path))


def _yolo_names(names) -> tuple[str, ...]:
    if isinstance(names, dict):
        return tuple(str(names[k]) for k in sorted(names, key=int))
    return tuple(str(n) for n in names)


def read_yolo(path: Path, split: str = "train") -> TrainData:
    """A YOLO data.yaml: `split`'s image folder (or list file), labels in the sibling labels/
    folder ("class cx cy w h" normalised, one line a box)."""
    import yaml
    from PIL import Image

    from ..io import IMAGE_EXTENSIONS

    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "names" not in spec or split not in spec:
        raise DataError(f"{path}: a YOLO data.yaml needs 'names' and {split!r}")
    classes = _yolo_names(spec["names"])
    root = Path(spec.get("path") or path.parent)
    root = root if root.is_absolute() else path.parent / root
    folder = root / str(spec[split])
    if not folder.is_dir():
        raise DataError(f"{path}: {split} images folder {folder} not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    samples = []
    for file in files:
        parts = list(file.parts)
        k = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
        label = Path(*parts[:k], "labels", *parts[k + 1:]).with_suffix(".txt") if k is not None else file.with_suffix(".txt")
        rows = np.loadtxt(label, ndmin=2, dtype=np.float64) if label.is_file() and label.stat().st_size else np.zeros((0, 5))
        with Image.open(file) as im:
            w, h = im.size
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
        samples.append(Sample(str(file), boxes.reshape(-1, 4), rows[:, 0].astype(np.int64)))
    if not samples:
        raise DataError(f"{path}: no images in {folder}")
    return TrainData(classes, tuple(samples), str(path))


def load_data(spec: str | Path, images: str | Path | None = None, split: str = "train") -> TrainData:
    """DATA or --val: a COCO .json, a YOLO .yaml, or an `ovdet label` folder (its coco/<split>.json,
    else its yolo/data.yaml)."""
    path = Path(spec)
    if not path.exists():
        raise DataError(f"training data not found: {path}")
    if path.is_dir():
        if (path / "coco" / f"{split}.json").is_file():
            return read_coco(path / "coco" / f"{split}.json", images)
        if (path / "yolo" / "data.yaml").is_file():
            return read_yolo(path / "yolo" / "data.yaml", split)
        raise DataError(f"{path}: not an `ovdet label` folder (no coco/{split}.json or yolo/data.yaml)")
    if path.suffix.lower() == ".json":
        return read_coco(path, images)
    if path.suffix.lower() in (".yaml", ".yml"):
        return read_yolo(path, split)
    raise DataError(f"{path}: give a COCO .json, a YOLO data.yaml or an `ovdet label` folder")


def has_split(spec: str | Path, split: str) -> bool:
    """Whether an `ovdet label` folder or YOLO data.yaml has a `split` of its own."""
    path = Path(spec)
    if path.is_dir():
        return (path / "coco" / f"{split}.json").is_file() or (path / "yolo" / "images" / split).is_dir()
    return False


def split_data(data: TrainData, fraction: float, seed: int) -> tuple[TrainData, TrainData]:
    """(train, val): a seeded `fraction` of the samples held out for validation."""
    if not 0 < fraction < 1:
        raise DataError(f"--val as a fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, int(round(fraction * len(data))))
    if n_val >= len(data):
        raise DataError(f"{data.source}: {len(data)} image(s) are too few to hold out {fraction:.0%}")
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    pick = lambda idx: tuple(data.samples[i] for i in idx)  # noqa: E731
    return TrainData(data.classes, pick(train), data.source), TrainData(data.classes, pick(val), data.source + " (val)")


def write_coco(data: TrainData, path: Path, classes: Sequence[str] | None = None) -> Path:
    """`data` as a COCO annotation file for `ovdet.eval` (absolute file names; category ids
    1..C in `classes` order, default `data.classes`)."""
    from PIL import Image

    from ..files import write_json

    names = list(classes or data.classes)
    ids = {name: i + 1 for i, name in enumerate(names)}
    images, anns = [], []
    for i, sample in enumerate(data.samples, start=1):
        with Image.open(sample.path) as im:
            w, h = im.size
        images.append({"id": i, "file_name": str(Path(sample.path).resolve()), "width": w, "height": h})
        for box, label in zip(sample.boxes.tolist(), sample.labels.tolist()):
            bw, bh = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": ids[data.classes[label]],
                         "bbox": [box[0], box[1], bw, bh], "area": bw * bh, "iscrowd": 0})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    write_json(path, {"images": images, "annotations": anns, "categories": cats}, indent=None)
    return path


__all__ = ["DataError", "Sample", "TrainData", "has_split", "load_data", "read_coco", "read_yolo", "split_data",
           "write_coco"]
