"""Label Studio: `labelstudio/tasks.json` (tasks with pre-annotations) and `config.xml` (the
labelling interface those pre-annotations fit: an Image named "image" and RectangleLabels
named "label").

Each task is {"data": {"image": URL, "split": ...}, "predictions": [{"model_version",
"score", "result": [...]}]}; a result region is a "rectanglelabels" value with x, y, width,
height in percent of the image, `original_width` / `original_height` and its own `score`
(Label Studio's documented import format for predictions). Images are referenced through
Label Studio's local-files server, `/data/local-files/?d=<path under the document root>`:
start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to `labelstudio_root` (default "/").
Neither supervision nor pycocotools writes this format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from ...files import write_json
from ..dataset import LabelledImage


def image_url(path: str, root: str = "/") -> str:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel.startswith(".."):
        raise ValueError(f"{path} is not under the Label Studio document root {root}")
    return "/data/local-files/?d=" + quote(Path(rel).as_posix())


def task(im: LabelledImage, classes: Sequence[str], model_version: str, root: str = "/") -> dict:
    w, h = float(im.width), float(im.height)
    result = []
    for i, ((x1, y1, x2, y2), score, cid) in enumerate(zip(im.xyxy.tolist(), im.scores.tolist(), im.class_ids.tolist())):
        result.append({
            "id": f"r{i}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": im.width, "original_height": im.height, "image_rotation": 0,
            "value": {"x": round(100 * x1 / w, 4), "y": round(100 * y1 / h, 4),
                      "width": round(100 * (x2 - x1) / w, 4), "height": round(100 * (y2 - y1) / h, 4),
                      "rotation": 0, "rectanglelabels": [classes[cid]]},
            "score": round(float(score), 5),
        })
    # the task's score orders Label Studio's "review the least confident first": the weakest box
    overall = round(min(im.scores.tolist()), 5) if len(im.scores) else 0.0
    return {"data": {"image": image_url(im.path, root), "split": im.split, "ovdet_path": im.path},
            "predictions": [{"model_version": model_version, "score": overall, "result": result}]}


def config_xml(classes: Sequence[str]) -> str:
    labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
    return ("<View>\n  <Image name=\"image\" value=\"$image\"/>\n"
            f"  <RectangleLabels name=\"label\" toName=\"image\">\n{labels}\n  </RectangleLabels>\n</View>\n")


def write(images: Sequence[LabelledImage], classes: list[str], folder: Path, model_version: str = "ovdet",
          labelstudio_root: str = "/", **_options) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "tasks.json", [task(im, classes, model_version, labelstudio_root) for im in images], indent=1)
    (folder / "config.xml").write_text(config_xml(classes), encoding="utf-8")
