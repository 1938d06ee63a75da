"""Where a detection run keeps its finished images: `<results_out>.partial.jsonl`, a header line
(the run manifest of `ovdet.kit.resume`: every setting that decides the detections) and then
one JSON line per finished image, appended after every batch and forced to disk. A run that
is interrupted, or killed, continues from it (`--resume`) without recomputing finished images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from ..exemplars import vocabulary_record
from ..files import jsonl_line
from ..kit.resume import as_stored, check_manifest, detector_settings, unfinished_message
from .dataset import Dataset

PARTIAL_FORMAT = "ovdet-eval-partial/1"


def partial_path(results_out: str | Path) -> Path:
    """Where a run streams finished images: `results.json` -> `results.json.partial.jsonl`."""
    results_out = Path(results_out)
    return results_out.with_name(results_out.name + ".partial.jsonl")


def unfinished_run_message(partial: Path) -> str:
    """The refusal when a run would replace an unfinished one: it names both ways out."""
    try:
        with open(partial, encoding="utf-8") as fh:
            finished = max(sum(1 for _ in fh) - 1, 0)  # the first line is the header
    except OSError:
        finished = 0
    return unfinished_message(partial, finished)


def fingerprint(values: Sequence[Any]) -> str:
    return hashlib.sha1(json.dumps(list(values)).encode("utf-8")).hexdigest()


def run_header(detector, dataset: Dataset, classes, category_ids: Sequence[int], threshold) -> dict:
    """The run manifest: everything that decides the detections, so that a resume with other
    settings is refused. (`classes`: a vocabulary, or a per-image one with a `record()`.)"""
    return as_stored({
        "format": PARTIAL_FORMAT,
        "annotations": str(dataset.path.resolve()),
        "detector": detector_settings(detector.config),
        "threshold": threshold,
        "vocabulary": fingerprint(classes.record() if callable(classes) else vocabulary_record(classes)),
        "category_ids": fingerprint(category_ids),
    })


def start_partial(path: Path, header: dict) -> None:
    """A fresh run: the partial file with its header line only."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(jsonl_line(header))


def read_partial(path: Path, header: dict) -> dict[int, list[dict]] | None:
    """Finished images of an earlier run: {image_id: results}; None if the file has no header.

    A run killed while writing leaves an incomplete last line: it is cut off (the file is
    truncated to the last complete line) and that image is computed again. A header that
    differs from `header` is refused (`ovdet.kit.resume.check_manifest`).
    """
    blob = path.read_bytes()
    good_end = 0
    done: dict[int, list[dict]] = {}
    stored = None
    for line in blob.split(b"\n")[:-1]:  # the piece after the last newline is incomplete
        try:
            record = json.loads(line)
        except ValueError:
            break
        if stored is None:
            if not isinstance(record, dict) or record.get("format") != PARTIAL_FORMAT:
                return None
            stored = record
        elif isinstance(record, dict) and "image_id" in record and isinstance(record.get("results"), list):
            done[record["image_id"]] = record["results"]
        else:
            break
        good_end += len(line) + 1
    if stored is None:
        return None
    check_manifest(stored, header, path)
    if good_end < len(blob):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return done
