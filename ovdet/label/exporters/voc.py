"""Pascal VOC: `voc/Annotations/STEM.xml`, `voc/ImageSets/Main/<split>.txt` (stems), and the
images in `voc/JPEGImages/` (linked or copied; VOC readers, supervision's included, look there).

The XML comes from supervision's `detections_to_pascal_voc` (1-based pixel corners, rounded
to whole pixels as the VOC devkit expects: within 0.5 px of the detector's boxes). Its
`save_pascal_voc_annotations` is not used: it decodes each image for its size and re-encodes
the images it writes.

With masks: `voc/SegmentationObject/STEM.png`, `voc/SegmentationClass/STEM.png` and
`voc/ImageSets/Segmentation/<split>.txt`, and a `<polygon>` per object in the XML (see
`voc_masks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..dataset import LabelledImage
from .files import place_image
from .voc_masks import with_polygons, write_pngs


def write(images: Sequence[LabelledImage], classes: list[str], folder: Path, copy_images: bool = False,
          **_options) -> None:
    from supervision.dataset.formats.pascal_voc import detections_to_pascal_voc

    folder = Path(folder)
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    (folder / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[str]] = {}
    for im in images:
        place_image(im.path, folder / "JPEGImages" / im.name, copy_images)
        xml = detections_to_pascal_voc(detections=im.to_supervision(), classes=classes, filename=im.name,
                                       image_shape=(im.height, im.width, 3))
        # supervision names itself as the source database; say who wrote these annotations
        xml = xml.replace("<database>roboflow.ai</database>", "<database>ovdet</database>", 1)
        if im.masks is not None:
            xml = with_polygons(xml, im)
            write_pngs(im, folder)
        (folder / "Annotations" / f"{im.stem}.xml").write_text(xml, encoding="utf-8")
        by_split.setdefault(im.split, []).append(im.stem)
    lists = ["Main", "Segmentation"] if any(im.masks is not None for im in images) else ["Main"]
    for sub in lists:
        (folder / "ImageSets" / sub).mkdir(parents=True, exist_ok=True)
        for split, stems in (by_split or {"train": []}).items():
            (folder / "ImageSets" / sub / f"{split}.txt").write_text("".join(s + "\n" for s in stems), encoding="utf-8")
