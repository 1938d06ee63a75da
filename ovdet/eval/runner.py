"""Run a `Detector` over the images of an annotation file and produce COCO results.

    outcome = run_detector(detector, dataset, "val2017/", classes=names, category_ids=ids,
                           results_out="results.json")

The vocabulary is the dataset's category names (or names given by the user, one per category),
and detection class indices are mapped back to the dataset's category ids (COCO ids are not
0..C-1). Finished images are appended to `<results_out>.partial.jsonl` after every batch (one
JSON line per image, after a header line with the settings), so a run that is interrupted, or
killed, continues with `resume=True` where it stopped, without recomputing finished images.
The final results file is written atomically and then the partial file is removed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..adapters import to_coco_results
from ..errors import ImageReadError, Interrupted, OvdetError, ResumeError
from ..exemplars import resolve_vocabulary
from ..files import jsonl_line, write_json
from ..io import read_model_input
from ..kit.resume import check_resume_flags, nothing_to_resume
from ..progress import progress_bar, write_line
from .dataset import Dataset
from .partial import partial_path, read_partial, run_header, start_partial, unfinished_run_message
from .categories import ClassesFileError, prompt_name, vocabulary

__all__ = ["ClassesFileError", "MasksRequiredError", "ResumeError", "RunOutcome", "image_path", "partial_path", "prompt_name",
           "run_detector", "unfinished_run_message", "vocabulary"]
SHOWN_SKIPS = 5  # skipped images named one by one; the rest are only counted
MASKS_HINT = "add --masks MODEL (a SAM 2 / SAM checkpoint: preset name, folder or hub id)"


class MasksRequiredError(OvdetError, ValueError):
    """Mask AP was asked of a detector whose detections carry no masks."""


@dataclass
class RunOutcome:
    """What `run_detector` did.

    results: COCO results [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, plus
        "segmentation" RLE with masks] in the annotation file's image order (so a resumed run
        gives the same file).
    image_ids: the images that have detections (computed now or earlier), i.e. those to score.
    skipped: file path -> reason, for images missing from the folder or unreadable.
    resumed: images taken over from an earlier, interrupted run.
    computed: images run through the model now.
    seconds: wall time of the model loop.
    """

    results: list[dict]
    image_ids: list[int]
    results_path: Path
    skipped: dict[str, str] = field(default_factory=dict)
    resumed: int = 0
    computed: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


def image_path(images_dir: Path, image: dict) -> Path:
    """Where an annotated image is in `images_dir` (its file name, or the name's last part)."""
    name = Dataset.file_name(image)
    path = images_dir / name
    if not path.is_file() and (images_dir / Path(name).name).is_file():
        path = images_dir / Path(name).name  # file_name with a split prefix ("val2017/...")
    return path


def detect_by_vocabulary(detector, arrays: list, vocabularies: list, threshold) -> list:
    """Detections per image, one `detect_batch` call per distinct vocabulary object."""
    groups: dict[int, list[int]] = {}
    for i, vocab in enumerate(vocabularies):
        groups.setdefault(id(vocab), []).append(i)
    dets: list = [None] * len(arrays)
    for members in groups.values():
        found = detector.detect_batch([arrays[i] for i in members], vocabularies[members[0]], threshold=threshold,
                                      batch_size=len(members))
        for i, d in zip(members, found):
            dets[i] = d
    return dets


def run_detector(
    detector,
    dataset: Dataset,
    images_dir: str | Path,
    *,
    classes: Sequence[str],
    category_ids: Sequence[int],
    results_out: str | Path,
    limit: int | None = None,
    batch_size: int | None = None,
    threshold: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "eval",
    need_masks: bool = False,
) -> RunOutcome:
    """Detect `classes` on the first `limit` images of `dataset` and write COCO results.

    Args:
        detector: an `ovdet.Detector` (anything with `detect_batch` and `config`).
        dataset: the annotations; images are `images_dir / file_name`, in file order.
        classes: the vocabulary (names and/or `ovdet.Example`s); its class i is dataset category
            `category_ids[i]`. Or a callable image dict -> vocabulary, with `names` and a
            JSON-able `record()` (a vocabulary per image, e.g. `oneshot.OneShotVocabulary`).
        results_out: the COCO results JSON to write (atomically).
        batch_size: images per forward pass, and per write to the partial file.
        threshold: score cut (default: the detector config's).
        resume: continue `<results_out>.partial.jsonl` if present (else start from the first image).
        overwrite: start over even if `<results_out>.partial.jsonl` holds an unfinished run
            (that run is deleted). Without `resume` or `overwrite` such a file is an error:
            finished work is never discarded silently (the protocol of `ovdet.kit.resume`).
        desc: the progress bar's label (the command: eval, calibrate).
        need_masks: mask AP will be computed: detections without masks stop the run with
            `MasksRequiredError` (a fresh run that found none leaves no partial file behind).
    Raises:
        ImageReadError: none of the selected images is in `images_dir`.
        ResumeError: the partial file was made with other settings, or exists and neither
            `resume` nor `overwrite` says what to do with it.
    """
    names = classes.names if callable(classes) else resolve_vocabulary(classes).names
    if len(names) != len(category_ids):
        raise ValueError(f"{len(names)} class names for {len(category_ids)} category ids")
    vocabulary_for = classes if callable(classes) else (lambda image: classes)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ImageReadError(f"image folder not found: {images_dir}")
    results_out = Path(results_out)
    selection = dataset.images[:limit] if limit else list(dataset.images)
    header = run_header(detector, dataset, classes, category_ids, threshold)
    partial = partial_path(results_out)
    partial.parent.mkdir(parents=True, exist_ok=True)

    check_resume_flags(resume, overwrite)
    done: dict[int, list[dict]] | None = None
    if resume and partial.is_file():
        done = read_partial(partial, header)
    elif resume:
        write_line(nothing_to_resume(partial))
    elif partial.is_file() and not overwrite:
        raise ResumeError(unfinished_run_message(partial))
    fresh = done is None
    done = done or {}
    selected_ids = {img["id"] for img in selection}
    resumed = sum(image_id in selected_ids for image_id in done)

    todo, skipped = [], {}
    for image in selection:
        if image["id"] in done:
            continue
        path = image_path(images_dir, image)
        if path.is_file():
            todo.append((image, path))
        else:
            skipped[str(path)] = "not found"
    if not todo and not resumed:
        first = next(iter(skipped))
        raise ImageReadError(
            f"none of the {len(selection)} image(s) of {dataset.path.name} are in {images_dir} "
            f"(e.g. {first} is missing)"
        )

    if fresh:
        start_partial(partial, header)

    def note_skip(path: Path, reason: str) -> None:
        skipped[str(path)] = reason
        if len(skipped) <= SHOWN_SKIPS:
            write_line(f"ovdet: skipping {path}: {reason}")

    for path, reason in list(skipped.items())[:SHOWN_SKIPS]:
        write_line(f"ovdet: skipping {path}: {reason}")

    size = batch_size or detector.config.batch_size
    reduce = detector.decode_size if detector.config.reduced_decode else None
    bar = progress_bar(total=len(selection), initial=resumed + len(skipped), desc=desc, unit="img", enabled=progress)
    start = time.perf_counter()
    computed = 0
    try:
        with open(partial, "a", encoding="utf-8") as out:
            for first in range(0, len(todo), size):
                batch_images, arrays = [], []
                for image, path in todo[first : first + size]:
                    try:
                        arrays.append(read_model_input(path, detector.config.max_pixels, reduce))  # as detect reads
                        batch_images.append(image)
                    except ImageReadError as exc:
                        note_skip(path, str(exc))
                        bar.update(1)
                if not arrays:
                    continue
                dets = detect_by_vocabulary(detector, arrays, [vocabulary_for(im) for im in batch_images], threshold)
                if need_masks and any(len(d) and d.masks is None for d in dets):
                    raise MasksRequiredError(f"--iou-type segm scores masks, and this detector gives boxes only: "
                                             f"{MASKS_HINT}")
                lines = []
                for image, det in zip(batch_images, dets):
                    entries = to_coco_results(det, image["id"], category_ids)
                    done[image["id"]] = entries
                    lines.append(jsonl_line({"image_id": image["id"], "results": entries}))
                # one write per batch, forced to disk: what is in the file is finished work
                out.write("".join(lines))
                out.flush()
                os.fsync(out.fileno())
                computed += len(arrays)
                bar.update(len(arrays))
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(f"interrupted; finished images are kept in {partial}: rerun with --resume to continue") from None
    except MasksRequiredError:
        bar.close()
        if fresh and not computed:
            partial.unlink(missing_ok=True)  # nothing finished: no unfinished run to resume
        raise
    bar.close()
    seconds = time.perf_counter() - start
    if len(skipped) > SHOWN_SKIPS:
        write_line(f"ovdet: {len(skipped)} image(s) skipped in all ({len(skipped) - SHOWN_SKIPS} not named above)")

    order = [img["id"] for img in selection if img["id"] in done]
    if not order:  # scoring zero images would make pycocotools fall back to all of them
        raise ImageReadError(f"none of the {len(selection)} image(s) could be read (e.g. {next(iter(skipped))}: "
                             f"{next(iter(skipped.values()))})")
    results = [entry for image_id in order for entry in done[image_id]]
    write_json(results_out, results, indent=None)
    partial.unlink(missing_ok=True)
    return RunOutcome(
        results=results, image_ids=order, results_path=results_out, skipped=skipped,
        resumed=resumed, computed=computed, seconds=seconds,
    )
