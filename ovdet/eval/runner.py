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

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from ..adapters import to_coco_results
from ..errors import ImageReadError, Interrupted, OvdetError
from ..exemplars import resolve_vocabulary, vocabulary_record
from ..files import read_json, write_json
from ..io import read_image
from .dataset import Dataset

PARTIAL_FORMAT = "ovdet-eval-partial/1"
SHOWN_SKIPS = 5  # skipped images named one by one; the rest are only counted
# detector settings that do not change which boxes come out
_RUN_ONLY_FIELDS = {"device", "batch_size", "description", "name", "cache_text"}


class ResumeError(OvdetError, ValueError):
    """A partial results file cannot be continued with the current settings."""


class ClassesFileError(OvdetError, ValueError):
    """A --classes-from file does not name every evaluated category."""


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
    return (f"{partial} holds an unfinished run ({finished} image(s) done): --resume continues it, "
            "--overwrite starts over and deletes it")


def prompt_name(name: str) -> str:
    """A category name as text for the model: LVIS writes "traffic_light" for "traffic light"."""
    return " ".join(name.replace("_", " ").split())


def _check_same_dataset(path: Path, categories: Sequence[dict], names: Sequence[str]) -> None:
    """Another dataset's annotations share ids but not meanings (LVIS id 1 is "aerosol can",
    COCO's is "person"): names taken by id from an annotation file that renames most of the
    evaluated categories would score the model on the wrong classes, silently."""
    def norm(name: str) -> str:
        return prompt_name(name).casefold()

    renamed = [(c, n) for c, n in zip(categories, names) if norm(c["name"]) != norm(n)]
    if 2 * len(renamed) > len(categories):
        cat, name = renamed[0]
        raise ClassesFileError(
            f"{path} renames {len(renamed)} of {len(categories)} categories by id (id {cat['id']}: "
            f"{cat['name']!r} -> {name!r}): it looks like another dataset's annotations; to rename "
            "on purpose, pass an {id: name} JSON or a text file"
        )


def vocabulary(categories: Sequence[dict], classes_from: str | Path | None = None) -> list[str]:
    """Class names for the evaluated categories (dicts with "id" and "name", sorted by id).

    `classes_from` replaces the dataset's names:
      - a JSON annotation file (COCO/LVIS): its category names, matched by id (an error when
        it renames most categories: another dataset's file, whose ids mean other things);
      - a JSON object {"<id>": "name"} or a JSON list of names (one per category, by id order);
      - a text file: one name per line, in ascending category-id order.
    """
    if classes_from is None:
        return [prompt_name(cat["name"]) for cat in categories]
    path = Path(classes_from)
    if path.suffix.lower() == ".json":
        raw = read_json(path, "classes file", error=ClassesFileError)
        annotations = isinstance(raw, dict) and isinstance(raw.get("categories"), list)
        if annotations:
            by_id = {c.get("id"): c.get("name") for c in raw["categories"] if isinstance(c, dict)}
        elif isinstance(raw, dict):
            by_id = {}
            for key, value in raw.items():
                try:
                    by_id[int(key)] = value
                except ValueError:
                    raise ClassesFileError(f"{path}: keys must be category ids, got {key!r}") from None
        elif isinstance(raw, list):
            names = raw
            by_id = None
        else:
            raise ClassesFileError(f"{path}: expected annotations, an {{id: name}} object or a list of names")
        if by_id is not None:
            names = []
            for cat in categories:
                if not isinstance(by_id.get(cat["id"]), str):
                    raise ClassesFileError(f"{path} has no name for category id {cat['id']} ({cat['name']!r})")
                names.append(by_id[cat["id"]])
        if annotations:
            _check_same_dataset(path, categories, names)
    else:
        from ..text import load_vocabulary  # the same text format as every other command

        names = load_vocabulary(path)
    if len(names) != len(categories) or not all(isinstance(n, str) for n in names):
        raise ClassesFileError(
            f"{path} gives {len(names)} name(s) for {len(categories)} categories: "
            "list one name per category, in id order"
        )
    return [prompt_name(n) for n in names]


@dataclass
class RunOutcome:
    """What `run_detector` did.

    results: COCO results [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}] in the
        annotation file's image order (so a resumed run gives the same file).
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


def _fingerprint(values: Sequence[Any]) -> str:
    return hashlib.sha1(json.dumps(list(values)).encode("utf-8")).hexdigest()


def run_header(detector, dataset: Dataset, classes, category_ids: Sequence[int], threshold) -> dict:
    """Everything that decides the detections, so that a resume with other settings is refused.
    (`classes`: a vocabulary, or a per-image one with a `record()`, see `run_detector`.)"""
    config = {k: v for k, v in dataclasses.asdict(detector.config).items() if k not in _RUN_ONLY_FIELDS}
    header = {
        "format": PARTIAL_FORMAT,
        "annotations": str(dataset.path.resolve()),
        "detector": config,
        "threshold": threshold,
        "vocabulary": _fingerprint(classes.record() if callable(classes) else vocabulary_record(classes)),
        "category_ids": _fingerprint(category_ids),
    }
    return json.loads(json.dumps(header))  # the form it takes after a round trip through the file


def _read_partial(path: Path, header: dict) -> dict[int, list[dict]] | None:
    """Finished images of an earlier run: {image_id: results}; None if the file has no header.

    A run killed while writing leaves an incomplete last line: it is cut off (the file is
    truncated to the last complete line) and that image is computed again.
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
    if stored != header:
        changed = [k for k in header if stored.get(k) != header.get(k)]
        if "detector" in changed:
            old, new = stored.get("detector") or {}, header["detector"]
            changed = [f"detector.{k}" for k in new if old.get(k) != new.get(k)] + [
                c for c in changed if c != "detector"
            ]
        raise ResumeError(
            f"cannot resume from {path}: it was written with other settings ({', '.join(changed)}); "
            "drop --resume to start over"
        )
    if good_end < len(blob):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return done


def image_path(images_dir: Path, image: dict) -> Path:
    """Where an annotated image is in `images_dir` (its file name, or the name's last part)."""
    name = Dataset.file_name(image)
    path = images_dir / name
    if not path.is_file() and (images_dir / Path(name).name).is_file():
        path = images_dir / Path(name).name  # file_name with a split prefix ("val2017/...")
    return path


def _detect_by_vocabulary(detector, arrays: list, vocabularies: list, threshold) -> list:
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
            finished work is never discarded silently.
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

    done: dict[int, list[dict]] | None = None
    if resume and partial.is_file():
        done = _read_partial(partial, header)
    elif resume:
        tqdm.write(f"ovdet: nothing to resume ({partial} not found); starting from the first image", file=sys.stderr)
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
        with open(partial, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(header) + "\n")

    def note_skip(path: Path, reason: str) -> None:
        skipped[str(path)] = reason
        if len(skipped) <= SHOWN_SKIPS:
            tqdm.write(f"ovdet: skipping {path}: {reason}", file=sys.stderr)

    for path, reason in list(skipped.items())[:SHOWN_SKIPS]:
        tqdm.write(f"ovdet: skipping {path}: {reason}", file=sys.stderr)

    size = batch_size or detector.config.batch_size
    reduce = detector.decode_size if detector.config.reduced_decode else None
    bar = tqdm(total=len(selection), initial=resumed + len(skipped), unit="img", desc="eval", file=sys.stderr,
               dynamic_ncols=True, disable=not progress)
    start = time.perf_counter()
    computed = 0
    try:
        with open(partial, "a", encoding="utf-8") as out:
            for first in range(0, len(todo), size):
                batch_images, arrays = [], []
                for image, path in todo[first : first + size]:
                    try:
                        loaded = read_image(path, detector.config.max_pixels, reduce)  # as `ovdet detect` reads
                        arrays.append(loaded if loaded.reduced else loaded.array)
                        batch_images.append(image)
                    except ImageReadError as exc:
                        note_skip(path, str(exc))
                        bar.update(1)
                if not arrays:
                    continue
                dets = _detect_by_vocabulary(detector, arrays, [vocabulary_for(im) for im in batch_images], threshold)
                lines = []
                for image, det in zip(batch_images, dets):
                    entries = to_coco_results(det, image["id"], category_ids)
                    done[image["id"]] = entries
                    lines.append(json.dumps({"image_id": image["id"], "results": entries}) + "\n")
                # one write per batch, forced to disk: what is in the file is finished work
                out.write("".join(lines))
                out.flush()
                os.fsync(out.fileno())
                computed += len(arrays)
                bar.update(len(arrays))
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(f"interrupted; finished images are kept in {partial}: rerun with --resume to continue") from None
    bar.close()
    seconds = time.perf_counter() - start
    if len(skipped) > SHOWN_SKIPS:
        tqdm.write(f"ovdet: {len(skipped)} image(s) skipped in all ({len(skipped) - SHOWN_SKIPS} not named above)",
                   file=sys.stderr)

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
