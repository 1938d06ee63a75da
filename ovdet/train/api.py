"""`train(TrainOptions(...))`: the whole run behind `ovdet train`, usable from Python.

    from ovdet.train import TrainOptions, train
    result = train(TrainOptions(data="dataset/", model="owlv2-b16", out=Path("runs/train/exp"), mode="heads"))
    Detector.from_pretrained(result.model_dir)

DIR/ after a run: model/ (the checkpoint folder to use with --model), metrics.json (settings
and the loss per step), loss.png, val.json (the validation set as COCO), report.json,
report.md and forgetting.png (the forgetting report, when there is something to score).
While training, checkpoint/last.pt (removed when the run completes).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import OvdetError, ResumeError
from ..files import write_json
from ..kit.resume import check_manifest, check_resume_flags
from .augment import parse_augments
from .checkpoint import checkpoint_path, load_checkpoint_state
from .data import DataError, TrainData, has_split, load_data, split_data, write_coco
from .modes import DEFAULT_LR, MODES
from .report import EvalSet, evaluate_row, loss_plot, write_report

WORK_DIR = ".work"  # temporary checkpoints scored by the report (removed afterwards)


@dataclass
class TrainOptions:
    """Everything `ovdet train` takes (see its --help); `lr` None: the mode's default."""

    data: str | Path
    model: str
    out: Path
    val: str | None = None
    images: Path | None = None
    mode: str = "heads"
    epochs: float = 10.0
    steps: int | None = None
    batch_size: int = 8
    lr: float | None = None
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    save_every: int = 100
    merge: float | None = None
    merge_report: Sequence[float] = ()
    probe_classes: str | None = None
    augment: str = "flip,crop,mosaic"
    templates: str = "photo"
    num_negatives: int = 50
    report: bool = True
    progress: bool = True


@dataclass
class TrainResult:
    out: Path
    model_dir: Path
    losses: list[dict] = field(default_factory=list)
    report: dict | None = None
    is_main: bool = True  # False in the other processes of a torchrun launch


def owl_checkpoint(model: str):
    """(config, checkpoint folder) of an OWL model; other families are refused in one line."""
    from ..model_names import resolve_config
    from ..weights import locate

    cfg = resolve_config(model)
    if cfg.backend == "yolo_world":
        raise OvdetError("ovdet train fine-tunes OWL-ViT / OWLv2; train YOLO-World with ultralytics' own trainer "
                         "(yolo train model=yolov8s-worldv2.pt data=DATA/yolo/data.yaml), which replaces its open "
                         "vocabulary with DATA's classes (see docs/train.md)")
    if cfg.backend != "owl":
        raise OvdetError(f"ovdet train fine-tunes OWL-ViT / OWLv2 models; {model!r} is a {cfg.backend} model")
    return cfg, locate(cfg.name, cfg.weights).path


def validation(opts: TrainOptions, data: TrainData) -> tuple[TrainData, TrainData | None]:
    """(training data, validation data or None): --val as a fraction, a file/folder, or DATA's own val split."""
    if opts.val is not None:
        try:
            fraction = float(opts.val)
        except ValueError:
            return data, load_data(opts.val, opts.images, split="val")
        return split_data(data, fraction, opts.seed)
    if has_split(opts.data, "val"):
        return data, load_data(opts.data, opts.images, split="val")
    return data, None


def probe_set(opts: TrainOptions, trained: Sequence[str], val_coco: Path | None) -> EvalSet | None:
    """The untrained classes to score: a probe annotation file, names from the val file, or
    the val file's categories absent from DATA."""
    from ..eval.dataset import load_dataset

    known = {n.casefold() for n in trained}
    spec = opts.probe_classes
    if spec and spec.lower().endswith(".json"):
        probe = load_dataset(spec)
        return EvalSet(Path(spec), tuple(c["name"] for c in probe.categories if c["name"].casefold() not in known))
    if val_coco is None:
        if spec:
            raise DataError("--probe-classes names classes of the validation set: give --val (or a probe .json)")
        return None
    names = [c["name"] for c in load_dataset(val_coco).categories if c["name"].casefold() not in known]
    if spec:
        wanted = [n.strip() for n in spec.split(",") if n.strip()]
        missing = [n for n in wanted if n.casefold() not in {m.casefold() for m in names}]
        if missing:
            raise DataError(f"--probe-classes: {missing[0]!r} is not an untrained category of the validation set")
        names = wanted
    return EvalSet(val_coco, tuple(names))


def check_out(opts: TrainOptions) -> None:
    """Refuse to train into a folder holding another run unless --resume / --overwrite say so."""
    check_resume_flags(opts.resume, opts.overwrite)
    ckpt = checkpoint_path(opts.out)
    if opts.overwrite:
        for part in ("model", "checkpoint", WORK_DIR):
            shutil.rmtree(opts.out / part, ignore_errors=True)
        return
    if opts.resume:
        if not ckpt.is_file():
            raise ResumeError(f"nothing to resume in {opts.out}: it has no {ckpt.relative_to(opts.out)} "
                              "(finished runs remove it; start over with --overwrite)")
        return
    if ckpt.is_file() or (opts.out / "model").exists():
        what = "an unfinished training run" if ckpt.is_file() else "a trained model"
        raise ResumeError(f"{opts.out} holds {what}: --resume continues an unfinished run, --overwrite starts over")


def prompt_start(model, processor, templates: Sequence[str], classes: Sequence[str]):
    """(C, D) the base model's template-ensemble embeddings of `classes` (what the Detector
    uses before training): prompt tuning starts from them."""
    import torch

    from ..text import ensemble, prompts_for
    from .model import OwlTrainModule, TextSide

    text = TextSide(OwlTrainModule(model), processor, torch.device("cpu"), frozen=True)
    with torch.no_grad():
        return ensemble(text.embeddings(prompts_for(templates, classes)), len(templates))


def manifest(opts: TrainOptions, data: TrainData, base: Path, steps: int, lr: float, exclude: Sequence[str]) -> dict:
    """The settings a resumed run must share with the interrupted one."""
    return {"format": "ovdet-train/1", "data": str(data.source), "classes": list(data.classes),
            "num_images": len(data), "model": str(base), "mode": opts.mode, "steps": steps, "lr": lr,
            "batch_size": opts.batch_size, "seed": opts.seed, "precision": opts.precision, "augment": opts.augment, "templates": opts.templates,
            "num_negatives": opts.num_negatives, "exclude": sorted(exclude)}


def train(opts: TrainOptions) -> TrainResult:
    """Fine-tune an OWL model on `opts.data`; see the module docstring for what is written."""
    import torch

    from ..runtime import resolve_device
    from ..text import resolve_templates
    from ..weights import load_checkpoint
    from .ddp import barrier, check_batch, init_distributed, shutdown
    from .loop import LoopSettings, Trainer
    from .modes import prepare
    from .stream import Stream

    if opts.mode not in MODES:
        raise OvdetError(f"--mode must be one of {', '.join(MODES)}, got {opts.mode!r}")
    try:
        augments = parse_augments(opts.augment)
    except ValueError as exc:
        raise OvdetError(str(exc)) from None
    cfg, base_path = owl_checkpoint(opts.model)
    data, val = validation(opts, load_data(opts.data, opts.images))
    if not len(data):
        raise DataError(f"{data.source}: no training images")
    check_out(opts)
    info, device = init_distributed(resolve_device(opts.device))
    try:
        check_batch(opts.batch_size, info)
        opts.out.mkdir(parents=True, exist_ok=True)
        val_coco = opts.out / "val.json" if val is not None else None
        if val_coco is not None and info.is_main:
            write_coco(val, val_coco)
        barrier(info)  # every process reads the probe classes (left out of the negatives)
        probe = probe_set(opts, data.classes, val_coco)
        exclude = tuple(probe.names) if probe else ()
        lr = opts.lr if opts.lr is not None else DEFAULT_LR[opts.mode]
        steps = opts.steps or max(1, math.ceil(opts.epochs * len(data) / opts.batch_size))
        torch.manual_seed(opts.seed)
        model, processor, _ = load_checkpoint(base_path, _auto_class(), "OWL")
        start = prompt_start(model, processor, resolve_templates(cfg.templates), data.classes) if opts.mode == "prompt" else None
        setup = prepare(model, opts.mode, lr, start)
        stream = Stream(data, opts.batch_size, opts.seed, augments, opts.num_negatives, exclude,
                        resolve_templates(opts.templates))
        wanted = manifest(opts, data, base_path, steps, lr, exclude)
        settings = LoopSettings(steps=steps, warmup=min(500, max(1, steps // 10)), precision=opts.precision,
                                save_every=opts.save_every, checkpoint=checkpoint_path(opts.out), progress=opts.progress,
                                manifest=wanted)
        trainer = Trainer(setup, processor, stream, device, settings, info)
        if opts.resume:
            check_manifest(load_checkpoint_state(settings.checkpoint)["manifest"], wanted, opts.out)
            trainer.restore(settings.checkpoint)
        losses = trainer.run()
        result = TrainResult(opts.out, opts.out / "model", losses, is_main=info.is_main)
        if info.is_main:
            result.report = finish(opts, setup, processor, base_path, start, data, losses, wanted, val_coco, probe)
        barrier(info)
        return result
    finally:
        shutdown(info)


def _auto_class():
    from transformers import AutoModelForZeroShotObjectDetection

    return AutoModelForZeroShotObjectDetection


def finish(opts, setup, processor, base_path: Path, start, data: TrainData, losses: list, settings: dict,
           val_coco: Path | None, probe: EvalSet | None) -> dict | None:
    """Save DIR/model (merged with --merge), metrics and plots, then the forgetting report."""
    from ..weights import load_checkpoint
    from .checkpoint import CHECKPOINT_DIR
    from .merge import merge_tensors, merged_model
    from .modes import plain_model, save_model

    tuned = plain_model(setup)
    learned = None if setup.module.prompts is None else setup.module.prompts.detach().cpu()
    merging = opts.merge is not None or (opts.report and opts.merge_report)
    # the base weights again, for merging (prompt mode never changed them)
    base = load_checkpoint(base_path, _auto_class(), "OWL")[0] if opts.mode != "prompt" and merging else tuned

    def save(alpha: float | None, folder: Path) -> Path:
        if opts.mode == "prompt":  # the model is the base; only the class embeddings move
            table = learned if alpha is None else merge_tensors(start, learned, alpha)
            return save_model(tuned, processor, folder, None if alpha == 0 else (list(data.classes), table))
        return save_model(tuned if alpha is None else merged_model(base, tuned, alpha), processor, folder)

    model_dir = save(opts.merge, opts.out / "model")
    metrics = {"settings": {**settings, "merge": opts.merge}, "losses": losses,
               "final_loss": losses[-1]["loss"] if losses else None}
    write_json(opts.out / "metrics.json", metrics, indent=1)
    loss_plot(losses, opts.out / "loss.png")
    shutil.rmtree(opts.out / CHECKPOINT_DIR, ignore_errors=True)
    trained = EvalSet(val_coco, tuple(data.classes)) if val_coco is not None else None
    if not opts.report or (trained is None and probe is None):
        return None
    work = opts.out / WORK_DIR
    device = None if opts.device == "auto" else opts.device
    rows = [evaluate_row("base", None, base_path, trained, probe, device)]
    rows.append(evaluate_row("tuned", None, model_dir if opts.merge is None else save(None, work / "tuned"),
                             trained, probe, device))
    for alpha in sorted(set(opts.merge_report) | ({opts.merge} if opts.merge is not None else set())):
        folder = model_dir if alpha == opts.merge else save(alpha, work / f"merge-{alpha:g}")
        rows.append(evaluate_row("merged", alpha, folder, trained, probe, device))
    shutil.rmtree(work, ignore_errors=True)
    return write_report(opts.out, rows, trained, probe)


__all__ = ["TrainOptions", "TrainResult", "finish", "owl_checkpoint", "train"]
