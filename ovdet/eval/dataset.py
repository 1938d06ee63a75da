"""Annotation and results files: reading, validating, and writing JSON atomically.

Formats (both as in the COCO / LVIS APIs):
  - annotations: {"images": [{"id", "file_name", ...}], "categories": [{"id", "name", ...}],
    "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "area", ...}]}.
    LVIS-style files add "neg_category_ids" / "not_exhaustive_category_ids" to every image and
    "frequency" (r/c/f) to every category.
  - results: [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}], boxes in pixels;
    mask results (iou_type "segm") carry "segmentation", COCO compressed RLE {"size": [h, w],
    "counts": str} of the image's size, and may leave out "bbox".

Problems are reported as one line naming the file and the first offending entry, before
pycocotools or lvis-api would fail with an assertion or a KeyError deep inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import OvdetError
from ..files import read_json


class AnnotationError(OvdetError, ValueError):
    """The annotation file is not COCO/LVIS JSON, or does not fit the chosen protocol."""


class ResultsError(OvdetError, ValueError):
    """A results file is malformed or names images / categories the annotations lack."""


_NUMBER = (int, float)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Dataset:
    """A validated COCO or LVIS annotation file.

    Attributes:
        path: where it was read from.
        data: the parsed JSON. Evaluators work on copies: pycocotools and lvis-api add keys
            ("ignore", "area"...) to the dicts they are given.
        kind: "lvis" when every image has neg/not-exhaustive lists and every category a
            frequency (federated annotation), else "coco".
        categories: category dicts sorted by id.
    """

    path: Path
    data: dict
    kind: str
    categories: list[dict] = field(repr=False)

    @property
    def images(self) -> list[dict]:
        """Image dicts in file order."""
        return self.data["images"]

    @property
    def image_ids(self) -> list[int]:
        return [img["id"] for img in self.data["images"]]

    @property
    def category_ids(self) -> list[int]:
        return [cat["id"] for cat in self.categories]

    def category_names(self) -> dict[int, str]:
        return {cat["id"]: cat["name"] for cat in self.categories}

    @staticmethod
    def file_name(image: dict) -> str:
        """The image's file name; LVIS v1 lists only `coco_url`, whose last part is the name."""
        name = image.get("file_name") or str(image.get("coco_url", "")).rsplit("/", 1)[-1]
        return str(name)


def load_dataset(path: str | Path) -> Dataset:
    """Read and validate a COCO or LVIS annotation file (raises `AnnotationError`)."""
    path = Path(path)
    data = read_json(path, "annotation file", error=AnnotationError)
    if isinstance(data, list):
        raise AnnotationError(
            f"{path} is a JSON list, not a COCO/LVIS annotation file (a results file? pass it with --results)"
        )
    if not isinstance(data, dict):
        raise AnnotationError(f"{path} is not a COCO/LVIS annotation file: expected a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            found = ", ".join(sorted(map(str, data))[:8]) or "none"
            raise AnnotationError(
                f"{path} is not a COCO/LVIS annotation file: it has no {key!r} list (top-level keys: {found})"
            )
    if not data["images"]:
        raise AnnotationError(f"{path} lists no images")
    if not data["categories"]:
        raise AnnotationError(f"{path} lists no categories")

    image_ids = _unique_ids(path, data["images"], "image")
    category_ids = _unique_ids(path, data["categories"], "category")  # also checks each is an object
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat.get("name"), str) or not cat["name"].strip():
            raise AnnotationError(f"{path}: category #{i + 1} has no name")
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation #{i + 1}"
        if not isinstance(ann, dict):
            raise AnnotationError(f"{where} is not an object")
        aid = ann.get("id")
        # pycocotools and lvis-api record matches by annotation id and read 0 as "unmatched"
        if not _is_int(aid) or aid <= 0:
            raise AnnotationError(
                f"{where} needs a positive integer 'id' (the COCO APIs read id 0 as unmatched), got {aid!r}"
            )
        if aid in ann_ids:
            raise AnnotationError(f"{where}: duplicate annotation id {aid}")
        ann_ids.add(aid)
        if not _is_int(ann.get("image_id")) or ann["image_id"] not in image_ids:
            raise AnnotationError(f"{where} refers to image id {ann.get('image_id')!r}, which is not in 'images'")
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in category_ids:
            raise AnnotationError(
                f"{where} refers to category id {ann.get('category_id')!r}, which is not in 'categories'"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise AnnotationError(f"{where}: 'bbox' must be [x, y, w, h], got {bbox!r}")
        if not _is_number(ann.get("area")):
            raise AnnotationError(f"{where} has no numeric 'area' (needed for the small/medium/large split)")

    is_lvis = all("neg_category_ids" in img and "not_exhaustive_category_ids" in img for img in data["images"]) and all(
        "frequency" in cat for cat in data["categories"]
    )
    categories = sorted(data["categories"], key=lambda c: c["id"])
    return Dataset(path=path, data=data, kind="lvis" if is_lvis else "coco", categories=categories)


def _unique_ids(path: Path, items: list, what: str) -> set:
    ids: set = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not _is_int(item.get("id")):
            raise AnnotationError(f"{path}: {what} #{i + 1} has no integer 'id'")
        if item["id"] in ids:
            raise AnnotationError(f"{path}: duplicate {what} id {item['id']}")
        ids.add(item["id"])
    return ids


def load_results(path: str | Path, dataset: Dataset, iou_type: str = "bbox") -> list[dict]:
    """Read a COCO results file and check it against `dataset` (raises `ResultsError`)."""
    data = read_json(path, "results file", error=ResultsError)
    if isinstance(data, dict) and "annotations" in data:
        raise ResultsError(f"{path} is an annotation file, not results: results are a JSON list of detections")
    return check_results(data, dataset, source=str(path), iou_type=iou_type)


def check_segmentations(dataset: Dataset) -> None:
    """Mask AP needs a mask on every ground-truth annotation (polygons or RLE)."""
    for i, ann in enumerate(dataset.data["annotations"]):
        segm = ann.get("segmentation")
        if not (isinstance(segm, list) and segm or isinstance(segm, dict) and "counts" in segm and "size" in segm):
            raise AnnotationError(f"{dataset.path}: annotation #{i + 1} has no 'segmentation' (polygons or RLE): "
                                  "mask AP (--iou-type segm) needs a mask on every annotation")


def _check_rle(det: dict, where: str, sizes: dict) -> None:
    segm = det["segmentation"]
    if not (isinstance(segm, dict) and isinstance(segm.get("counts"), str) and isinstance(segm.get("size"), list)):
        raise ResultsError(f"{where}: 'segmentation' must be COCO compressed RLE "
                           '{"size": [h, w], "counts": str} (as pycocotools.mask.encode writes it)')
    size = sizes.get(det["image_id"])
    if size is not None and list(segm["size"]) != size:
        raise ResultsError(f"{where}: a mask of size {segm['size']} on image {det['image_id']} of size {size} (h, w)")


def check_results(results: Any, dataset: Dataset, source: str = "results", iou_type: str = "bbox") -> list[dict]:
    """Validate COCO results against the annotations: structure, finite numbers, known ids.

    Returns the list unchanged. Boxes are [x, y, w, h] with w, h >= 0. With iou_type "segm"
    each entry needs a "segmentation" RLE of its image's size and "bbox" is optional.
    """
    if not isinstance(results, list):
        raise ResultsError(
            f"{source} is not a COCO results file: expected a JSON list of "
            '{"image_id", "category_id", "bbox": [x, y, w, h], "score"}'
        )
    image_ids = set(dataset.image_ids)
    category_ids = set(dataset.category_ids)
    segm = iou_type == "segm"
    required = ("image_id", "category_id", "segmentation", "score") if segm else ("image_id", "category_id", "bbox", "score")
    what = "mask" if segm else "box"
    sizes = {img["id"]: [img["height"], img["width"]] for img in dataset.images if "height" in img and "width" in img}
    bad_images: list[Any] = []
    bad_categories: list[Any] = []
    for i, det in enumerate(results):
        where = f"{source}: entry #{i + 1}"
        if not isinstance(det, dict):
            raise ResultsError(f"{where} is not an object")
        for key in required:
            if key not in det:
                raise ResultsError(f"{where} has no {key!r} ({what} results need {', '.join(required)})")
        bbox = det.get("bbox", [0, 0, 0, 0])
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise ResultsError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ResultsError(
                f"{where}: negative box width/height in {bbox} (boxes are [x, y, w, h], not [x1, y1, x2, y2])"
            )
        if not _is_number(det["score"]):
            raise ResultsError(f"{where}: 'score' must be a finite number, got {det['score']!r}")
        for key in ("image_id", "category_id"):
            if not _is_int(det[key]):
                raise ResultsError(f"{where}: {key!r} must be an integer id, got {det[key]!r}")
        if det["image_id"] not in image_ids:
            bad_images.append(det["image_id"])
        elif segm:
            _check_rle(det, where, sizes)
        if det["category_id"] not in category_ids:
            bad_categories.append(det["category_id"])
    if bad_images:
        raise ResultsError(
            f"{source}: {len(bad_images)} detection(s) on image ids not in {dataset.path.name} "
            f"(e.g. {bad_images[0]!r}); results and annotations must describe the same images"
        )
    if bad_categories:
        # COCO ids start at 1 and skip numbers; a 0 usually means unmapped class indices
        hint = ""
        if 0 in bad_categories:
            hint = "; ids from 0 look like class indices: map them to the dataset's category ids"
        raise ResultsError(
            f"{source}: {len(bad_categories)} detection(s) with category ids not in {dataset.path.name} "
            f"(e.g. {bad_categories[0]!r}){hint}"
        )
    return results


def only_images(results: Iterable[dict], image_ids: Iterable[int]) -> list[dict]:
    """The results on the given images (order kept)."""
    keep = set(image_ids)
    return [det for det in results if det["image_id"] in keep]
