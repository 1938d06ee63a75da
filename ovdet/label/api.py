"""`label()`: a folder of images -> a training dataset (COCO, YOLO, VOC, Label Studio).

    from ovdet.label import label
    report = label("photos/", {"car": ["car", "automobile"], "person": ["person"]}, "dataset/",
                   formats=("coco", "yolo"), split="train=0.8,val=0.2", model="owlv2-b16")

Steps: sources -> sorted absolute paths -> chunks (one forward batch each) -> the engine
(local loop or Ray Data) runs `LabelWork` on the chunks not yet on disk -> each finished chunk
is a shard in DIR/.ovdet-label/ -> when every chunk is done, the export and report.json are
written from the shards alone. A run that dies continues with `resume=True`; a resume with
other detection settings is refused; export options (formats, split, review...) may change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..defaults import DEFAULT_DETECTOR
from ..errors import ImageReadError, Interrupted, OvdetError
from ..files import write_json
from ..kit.resume import as_stored, check_resume_flags, detector_settings, nothing_to_resume
from ..progress import progress_bar
from .dataset import build_images, parse_split
from .exporters import FORMATS, MASK_FORMATS, export, parse_formats
from .ontology import Ontology
from .report import build_report, review_sheet
from .shards import MANIFEST_FORMAT, STATE_DIR, ShardStore
from .sources import expand_sources
from .work import LabelWork, chunks

ENGINES = ("local", "ray")
# what a finished or interrupted run leaves in DIR; --overwrite removes exactly these
OUTPUTS = (STATE_DIR, "report.json", "review.jpg", *FORMATS, *(f".{f}.partial" for f in FORMATS))


class OutputExistsError(OvdetError, FileExistsError):
    """--out is not empty and neither --resume nor --overwrite was given."""


class LabelUsageError(OvdetError, ValueError):
    """Options of `label` that do not go together."""


def _fingerprint(values: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(values).encode("utf-8")).hexdigest()


def manifest(config, onto: Ontology, paths: Sequence[str], chunk_size: int) -> dict:
    """The run manifest (`ovdet.kit.resume`): what decides the annotations (the batch size is
    fixed by the chunks)."""
    payload = {"format": MANIFEST_FORMAT, "ontology": onto.to_dict(), "detector": detector_settings(config),
               "images": {"count": len(paths), "sha1": _fingerprint(paths)}, "chunk_size": int(chunk_size)}
    return as_stored(payload)


def prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder by accident; --overwrite clears ovdet's outputs."""
    check_resume_flags(resume, overwrite)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if overwrite:
        for name in entries:
            if name in OUTPUTS:
                target = out / name
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        return
    if entries and not resume:
        raise OutputExistsError(f"--out {out} is not empty ({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}): "
                                "pass --resume to continue the run there, or --overwrite to start over")
    if entries and resume and not (out / STATE_DIR / "manifest.json").is_file():
        raise OutputExistsError(f"--resume: {out} holds no ovdet label run ({STATE_DIR}/manifest.json is missing); "
                                "use another --out or --overwrite")


def label(
    sources: str | Path | Sequence[str | Path],
    ontology: Ontology | Mapping | str | Path | Sequence[str],
    out: str | Path,
    formats: str | Sequence[str] = ("coco", "yolo"),
    engine: str = "local",
    *,
    model: str | Path = DEFAULT_DETECTOR,
    split: str | Mapping[str, float] | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    review: int = 0,
    copy_images: bool = False,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    ray_address: str | None = None,
    labelstudio_root: str = "/",
    mask_format: str = "rle",
    progress: bool = True,
    quiet_engine: bool = True,
    device: str | None = None,
    detector: Any = None,
    **overrides: Any,
) -> dict:
    """Label images with an open-vocabulary detector and write a dataset; returns the report.

    Args:
        sources: image files, folders (recursive), globs, or .txt lists of paths.
        ontology: an `Ontology`, a dict ({class: [prompts]} or {"classes": ..., "negatives": ...}),
            a YAML path, or class names ("car,person").
        out: output folder; must be empty unless `resume` or `overwrite`.
        formats: any of "coco", "yolo", "voc", "labelstudio".
        engine: "local" (this process) or "ray" (Ray Data; `workers` actors with
            `gpus_per_worker` GPUs and `cpus_per_worker` CPUs each; `ray_address` joins a cluster).
        model, device, **overrides: the detector, as for `Detector.from_pretrained`
            (threshold, nms_iou, batch_size, precision, templates, negatives...).
        split: "train=0.8,val=0.2" or {"train": 0.8, "val": 0.2}; default all train.
        seed: the split's random seed (the split depends only on it and the image set).
        review: draw this many random annotated images into DIR/review.jpg.
        mask_format: with masks (`masks=` a SAM 2 / SAM checkpoint): "rle" (COCO compressed
            RLE, Label Studio brush) or "polygon" (COCO polygons, Label Studio polygonlabels);
            YOLO always gets polygons and VOC PNGs.
        progress: show a progress bar (on a terminal); quiet_engine: keep Ray's own log lines
            out of the terminal (the CLI shows them with --debug).
        detector: a ready `Detector` (or anything with `config` and `detect_batch`) for the
            local engine; `model`, `device` and the overrides are then ignored.
    Returns:
        The report (also written to DIR/report.json): images, skipped, boxes per class,
        score quantiles, settings, model, and the run's engine and counts.
    Raises:
        OvdetError subclasses for bad input (nothing is written before they are checked).
    """
    # -- everything that can be wrong is checked before a model loads ------------------------------
    onto = Ontology.coerce(ontology)
    fmt = parse_formats(formats)
    fractions = parse_split(split)
    if engine not in ENGINES:
        raise LabelUsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if mask_format not in MASK_FORMATS:
        raise LabelUsageError(f"--mask-format must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
    if workers < 1 or gpus_per_worker < 0 or cpus_per_worker <= 0 or review < 0:
        raise LabelUsageError("--workers must be >= 1, --gpus-per-worker >= 0, --cpus-per-worker > 0, --review >= 0")
    if engine == "ray":
        from .ray_engine import import_ray

        import_ray()  # a missing extra is a one-line error now, not after the sources are read
    out = Path(out)
    paths = expand_sources(sources)
    if "labelstudio" in fmt:
        from .exporters.labelstudio import image_url

        try:  # every path, now: finding one outside the root after hours of labelling would be late
            for path in paths:
                image_url(path, labelstudio_root)
        except ValueError as exc:
            raise LabelUsageError(f"--labelstudio-root: {exc}") from None
    from ..detector import resolve_config

    config = detector.config if detector is not None else resolve_config(model, device=device, **overrides)
    prepare_out(out, resume, overwrite)
    # a resumed run keeps its chunking, so its chunks are the same batches as before
    store = ShardStore(out)
    chunk_size = int(config.batch_size)
    if resume and store.exists():
        stored = int(store.stored_manifest().get("chunk_size", chunk_size))
        if stored != chunk_size:
            print(f"ovdet: resuming with the interrupted run's batches of {stored} image(s) (not {chunk_size}), "
                  "so that every chunk is the batch it was", file=sys.stderr)
        chunk_size = stored
    wanted = manifest(config, onto, paths, chunk_size)
    all_chunks = chunks(paths, chunk_size)
    resuming = resume and store.exists()
    done: dict[int, list[dict]] = {}
    if resuming:
        store.check(wanted)
        done = store.finished(dict(all_chunks))
    todo = [(k, p) for k, p in all_chunks if k not in done]
    # the local engine loads its model before anything is written: missing weights leave no
    # half-started run behind in --out
    work = LabelWork(config, onto, detector=detector) if engine == "local" else None
    if work is not None and todo:
        work.load()
    if not resuming:
        if resume:
            print(nothing_to_resume(out), file=sys.stderr)
        store.start(wanted)
    resumed = sum(len(r) for r in done.values())

    # -- run the engine on what is left -----------------------------------------------------------
    bar = progress_bar(total=len(paths), initial=resumed, desc="label", unit="img", enabled=progress and len(paths) > 1,
                       smoothing=0.1)
    computed = 0

    def finish_chunk(k: int, records: list[dict]) -> None:
        nonlocal computed
        store.write(k, records)
        done[k] = records
        computed += len(records)
        for r in records:
            if "error" in r:
                bar.write(f"ovdet: skipping {r['image']}: {r['error']}", file=sys.stderr)
        bar.update(len(records))

    started = time.perf_counter()
    workers_seen: list[str] = []
    try:
        if work is not None:
            for k, chunk_paths in todo:
                finish_chunk(k, work(chunk_paths))
        else:
            from .ray_engine import run_ray

            workers_seen = sorted(run_ray(config, onto.to_dict(), todo, finish_chunk, workers=workers,
                                          gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                                          address=ray_address, quiet=quiet_engine))
    except KeyboardInterrupt:
        bar.close()
        # the CLI prints this message, once (a bare KeyboardInterrupt would add a second "interrupted")
        raise Interrupted(f"interrupted; {len(done)} of {len(all_chunks)} chunk(s) are saved in {store.root}: "
                          "rerun with --resume to continue") from None
    bar.close()
    seconds = time.perf_counter() - started

    # -- export from the shards ---------------------------------------------------------------------
    records = [r for k, _ in all_chunks for r in done[k]]
    skipped = {r["image"]: r["error"] for r in records if "error" in r}
    images = build_images(records, onto.names, fractions, seed)
    if not images:
        raise ImageReadError(f"none of the {len(paths)} image(s) could be read (e.g. {next(iter(skipped))}: "
                             f"{next(iter(skipped.values()))})")
    model_version = f"ovdet {config.name or config.weights}"
    written = export(images, onto.names, out, fmt, copy_images=copy_images, model_version=model_version,
                     labelstudio_root=labelstudio_root, mask_format=mask_format)
    shown = review_sheet(images, onto.names, review, seed, out / "review.jpg") if review else []
    settings = {
        "sources": [str(s) for s in ([sources] if isinstance(sources, (str, Path)) else sources)],
        "ontology": onto.to_dict(), "formats": list(fmt), "split": fractions, "seed": seed,
        "copy_images": copy_images, "review": review, "labelstudio_root": labelstudio_root,
        "mask_format": mask_format,
    }
    run = {"engine": engine, "workers": workers if engine == "ray" else 1, "gpus_per_worker": gpus_per_worker,
           "computed": computed, "resumed": resumed, "seconds": round(seconds, 3),
           "images_per_second": round(computed / seconds, 3) if seconds > 0 and computed else None,
           "chunk_size": chunk_size, "outputs": written, "review_images": shown}
    if workers_seen:
        run["worker_ovdet"] = workers_seen
    report = build_report(images, skipped, onto.names, settings, dataclasses.asdict(config), run)
    write_json(out / "report.json", report, indent=2)
    return report
