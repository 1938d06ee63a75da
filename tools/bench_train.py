#!/usr/bin/env python
"""Training throughput of `ovdet train` on a full-size OWL-ViT B/32 (768 px, random weights built
from the real config), per mode: images/s over timed optimizer steps after warm-up ones, and
the process's peak RSS (each mode in a fresh process, so peaks do not mix).

    python tools/bench_train.py                          # every mode, batch 8, CPU, 2 threads
    python tools/bench_train.py --modes heads,lora --steps 3 --json train.json
    python tools/bench_train.py --device cuda --batch 16  # on a GPU (peak CUDA memory too)

The images are synthetic 640 x 480 scenes (coloured shapes on noise, 3 classes) run through the
real data path: augmentation, 50 random negatives per image, Hungarian matching, the losses.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def make_b32(folder: Path) -> Path:
    """OWL-ViT B/32 at its real size (the transformers defaults), random weights, real tokenizer."""
    import torch
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    import make_tiny_models

    torch.manual_seed(0)
    model = OwlViTForObjectDetection(OwlViTConfig(vision_config={"image_size": 768, "patch_size": 32}))
    size = {"height": 768, "width": 768}
    processor = OwlViTProcessor(image_processor=OwlViTImageProcessor(size=size, crop_size=size),
                                tokenizer=make_tiny_models.clip_tokenizer())
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def one_mode(model: Path, data: Path, mode: str, batch: int, warm: int, steps: int, device: str,
             precision: str) -> dict:
    """Time `steps` optimizer steps after `warm` ones, in this process."""
    import torch

    from ovdet.train.data import load_data
    from ovdet.train.loop import LoopSettings, Trainer
    from ovdet.train.modes import DEFAULT_LR, prepare
    from ovdet.train.stream import Stream
    from ovdet.weights import load_checkpoint
    from transformers import AutoModelForZeroShotObjectDetection

    torch.manual_seed(0)
    net, processor, _ = load_checkpoint(model, AutoModelForZeroShotObjectDetection, "OWL")
    train = load_data(data)
    start = None
    if mode == "prompt":
        from ovdet.train.api import prompt_start

        start = prompt_start(net, processor, ("a photo of a {}",), train.classes)
    setup = prepare(net, mode, DEFAULT_LR[mode], start)
    stream = Stream(train, batch, 0, ("flip", "crop", "mosaic"), 50)
    trainer = Trainer(setup, processor, stream, torch.device(device),
                      LoopSettings(steps=warm + steps, warmup=1, precision=precision, progress=False))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warm):
        trainer.train_step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    seconds = time.perf_counter() - t0
    out = {"mode": mode, "batch": batch, "steps": steps, "seconds": seconds, "images_per_s": batch * steps / seconds,
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "trainable_params": sum(p.numel() for g in setup.param_groups for p in g["params"])}
    if device.startswith("cuda"):
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="prompt,heads,lora,full")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warm", type=int, default=1, help="untimed steps first (oneDNN kernels, caches)")
    p.add_argument("--steps", type=int, default=2, help="timed steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--json", help="write the results here")
    p.add_argument("--child", nargs=3, metavar=("MODEL", "DATA", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        model, data, mode = args.child
        print(json.dumps(one_mode(Path(model), Path(data), mode, args.batch, args.warm, args.steps, args.device,
                                  args.precision)))
        return 0
    from train_data import make_split

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_b32(Path(tmp) / "owlvit-b32")
        data = make_split(Path(tmp) / "data", "train", ["red square", "blue circle", "yellow triangle"], 16, seed=0,
                          size=640)
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--child", str(model), str(data), mode, "--batch", str(args.batch),
                   "--warm", str(args.warm), "--steps", str(args.steps), "--threads", str(args.threads),
                   "--device", args.device, "--precision", args.precision]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(row)
            print(f"{mode:7s} {row['images_per_s']:6.2f} images/s  peak RSS {row['peak_rss_gb']:.2f} GB"
                  + (f"  peak CUDA {row['peak_cuda_gb']:.2f} GB" if "peak_cuda_gb" in row else "")
                  + f"  ({row['trainable_params'] / 1e6:.2f} M trainable)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
