#!/usr/bin/env python
"""Speed of ovdet against the reference implementations, on full-size architectures.

Weights are random (built from the real configs): speed does not depend on their values, and
no checkpoint is needed. Every comparison runs in ONE process, interleaved (ovdet, reference,
ovdet, reference, ...), and reports medians and ratios.

    python tools/bench.py                     # everything, CPU, 2 threads
    python tools/bench.py --only owl,peak --reps 5 --json bench.json
    python tools/bench.py --device cuda --only owl --owl owlv2-b16 --batch 16   # on a GPU

Sections:
  peak    square matmul in bf16 and fp32: the hardware's practical peak (FLOP/s)
  owl     OWL detection of 20 classes in one 640x480 image, end to end (read array ->
          Detections): ovdet (fp32, bf16) vs the transformers zero-shot-object-detection
          pipeline (which runs the model once per label); achieved FLOP/s of ovdet's fastest
          mode on the forward alone (tower + heads; FLOPs counted by torch on the plain
          transformers modules, attention included) vs the bf16 matmul peak, timed
          interleaved with the forward and, with `peak` in --only, on its own
  clip    CLIP region scoring of 100 boxes: ovdet crop (batched) and pooled paths vs scoring
          each crop alone with transformers' CLIPModel
  cache   embedding a 1,203-class vocabulary with the 12-template ensemble, then again
  memory  RSS growth over many images (--memory-images)
  owl-direct  OWL end to end, 20 classes, one 640x480 image: ovdet vs the direct bf16
          transformers call (one pass for all labels, stock processor and post-processing), and
          where the time outside the forward goes on each side
  video   `ovdet video` on a 720p clip (decode, detect, draw, encode) vs the detector's own
          frames/s on the same decoded frames
  yolo    YOLO-World-S (80 classes) and a YOLOv8s proposer, one 1280x720 photo: ovdet vs
          ultralytics' own `predict` on the same checkpoint
  onnx    the same OWL detection through an `ovdet export` folder on onnxruntime (CPU, fp32 graphs)
          vs ovdet's torch bf16 and fp32 paths, one process, interleaved
  sam3    SAM 3 (full size, random weights, --sam3-size px) on one photo, 1, 10 and 80 classes:
          ovdet (one vision pass, all prompts batched) vs transformers once per class, and
          ovdet's split into vision encoder, text, DETR and masks (tools/bench_sam3.py)
  masks   SAM 2 (hiera-tiny, hiera-large) masks of 50 boxes on a 1280x720 photo: ovdet's one
          prompt batch vs a one-box-per-call loop (autodistill's grounded-SAM), split into image
          encoder, decoder and upsampling (tools/bench_masks.py)
  tiles   sliced inference: tiles/s of a 2560x1920 image in 640 px tiles, batched (--tile-batch)
          vs one tile per forward pass; peak RSS and time of `ovdet detect` on a 20000 x 20000
          PNG, whole and in --huge-tile tiles (fresh processes)
  search  `ovdet index` / `ovdet search` (tools/bench_search.py): query latency over 10,000 and
          1,000,000 stored regions, full scan vs the ANN index (IVF-SQ); bytes per image; indexing throughput vs
          `detect` on the same images (--search-images, --search-rows)
  grounded  Grounding DINO-T, MM-Grounding-DINO-T and OmDet-Turbo-T, one 1280x720 photo, 20
          classes and LVIS's 1,203: ovdet vs the direct transformers call (per chunk for long
          vocabularies) and the zero-shot-object-detection pipeline (tools/bench_grounded.py)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import make_tiny_models  # noqa: E402  (the real CLIP tokenizer, built offline)

CLASSES20 = ["person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign", "bench",
             "bird", "cat", "dog", "horse", "backpack", "umbrella", "handbag", "bottle", "cup", "chair", "laptop"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleaved(named: dict, reps: int, device: str, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, run round-robin so drifts hit all alike."""
    for fn in named.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in named}
    for _ in range(reps):
        for name, fn in named.items():
            times[name].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def test_image(h: int = 480, w: int = 640) -> np.ndarray:
    from PIL import Image

    photo = np.asarray(Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB").resize((w, h)))
    return np.ascontiguousarray(photo)


# -- peak -------------------------------------------------------------------------------------
PEAK_N = 2048  # square matmul side for the peak: large enough to saturate, small enough to repeat


def bench_peak(device: str, reps: int, n: int = PEAK_N) -> dict:
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        sec = interleaved({"mm": lambda: a @ b}, reps * 3, device, warmup=2)["mm"]
        out[f"matmul_{name}_tflops"] = 2 * n**3 / sec / 1e12
    return out


# -- OWL --------------------------------------------------------------------------------------
def save_owl(kind: str, folder: Path) -> Path:
    from transformers import (Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor,
                              OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor)

    tok = make_tiny_models.clip_tokenizer(max_length=16)
    if kind == "owlvit-b32":  # the transformers defaults are google/owlvit-base-patch32's architecture
        model, proc = OwlViTForObjectDetection(OwlViTConfig()), OwlViTProcessor(OwlViTImageProcessor(), tok)
    elif kind == "owlv2-b16":  # google/owlv2-base-patch16-ensemble: ViT-B/16 at 960 px
        model = Owlv2ForObjectDetection(Owlv2Config(vision_config={"image_size": 960, "patch_size": 16}))
        proc = Owlv2Processor(Owlv2ImageProcessor(size={"height": 960, "width": 960}), tok)
    else:
        raise SystemExit(f"unknown --owl {kind}")
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def count_cpu_attention_flops() -> None:
    """Teach torch's FLOP counter the CPU flash-attention kernel. It counts the CUDA SDPA
    kernels but not `_scaled_dot_product_flash_attention_for_cpu`, so on a CPU it silently
    left out the attention matmuls (12.3 of OWL-ViT B/32's 115 GFLOP at 768 px)."""
    from torch.utils import flop_counter

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def owl_forward(det, reference, images, classes, reps: int, device: str) -> tuple[float, dict[str, float]]:
    """FLOPs and median seconds of `det`'s forward alone (image tower + box and class heads) on
    already preprocessed images: what "FLOP/s of the forward" means.

    FLOPs are a property of the architecture; torch counts them on `reference`, a detector of
    the same model that runs the plain transformers modules (its counter does not see fused
    oneDNN kernels). The forward is timed interleaved with the peak matmul (2048^3, bf16, its
    operands re-warmed in cache before each timing), so both see the same machine state:
    clock and neighbours drift on a shared VM.
    Returns (flops, {"forward": s, "peak_matmul": s}).
    """
    from torch.utils.flop_counter import FlopCounterMode

    def forward_of(d):
        embeds = d.class_embeddings(tuple(classes))
        pixel_values = d.backend.preprocess(images)

        def forward():
            feats, _ = d.backend.image_features(pixel_values)
            d.backend.class_logits(feats, embeds)

        return forward

    count_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        forward_of(reference)()
    a, b = (torch.randn(PEAK_N, PEAK_N, device=device, dtype=torch.bfloat16) for _ in range(2))
    forward = forward_of(det)
    forward()
    times: dict[str, list[float]] = {"forward": [], "peak_matmul": []}
    for _ in range(reps * 3):
        times["forward"].append(timed(forward, device))
        a @ b  # untimed: brings the matrices back into cache after the forward evicted them
        times["peak_matmul"].append(timed(lambda: a @ b, device))
    return float(counter.get_total_flops()), {k: statistics.median(v) for k, v in times.items()}


def bench_owl(args, work: Path) -> dict:
    from transformers import pipeline

    from ovdet import Detector

    folder = save_owl(args.owl, work / args.owl)
    image = test_image()
    images = [image] * args.batch
    modes = {"fp32": "fp32", "bf16": "bf16"} if args.device == "cpu" else {"fp16": "fp16", "bf16": "bf16"}
    dets = {m: Detector.from_pretrained(str(folder), precision=p, device=args.device, cache_text=False,
                                        batch_size=args.batch, compile=args.compile) for m, p in modes.items()}
    fns = {f"ovdet_{m}": (lambda d=d: d.detect_batch(images, CLASSES20)) for m, d in dets.items()}
    if args.device == "cpu" and args.batch == 1:
        from PIL import Image

        pipe = pipeline("zero-shot-object-detection", model=str(folder), device=-1)
        pil = Image.fromarray(image)
        fns["hf_pipeline_fp32"] = lambda: pipe(pil, candidate_labels=CLASSES20)
    secs = interleaved(fns, args.reps, args.device)
    out = {f"{k}_images_per_s": args.batch / v for k, v in secs.items()}
    fastest = min((k for k in secs if k.startswith("ovdet")), key=secs.get)
    reference = next(d for d in dets.values() if d.backend.dtype != torch.bfloat16 or args.device != "cpu")
    flops, window = owl_forward(dets[fastest.split("_", 1)[1]], reference, images, CLASSES20, args.reps,
                                args.device)
    forward_sec, peak_tflops = window["forward"], 2 * PEAK_N**3 / window["peak_matmul"] / 1e12
    out.update(
        architecture=args.owl,
        compiled=args.compile,
        classes=len(CLASSES20),
        batch=args.batch,
        fastest_mode=fastest,
        forward_gflop_per_batch=flops / 1e9,
        forward_seconds=forward_sec,
        fastest_achieved_tflops=flops / forward_sec / 1e12,
        end_to_end_tflops=flops / secs[fastest] / 1e12,
        peak_bf16_tflops_same_window=peak_tflops,
        fraction_of_peak=flops / forward_sec / 1e12 / peak_tflops,
    )
    if "hf_pipeline_fp32" in secs:
        out["speedup_vs_pipeline"] = secs["hf_pipeline_fp32"] / secs[fastest]
    return out


def stage_times(fns: dict, reps: int, device: str) -> dict[str, float]:
    """Median milliseconds of each stage, interleaved like the end-to-end timings."""
    return {f"{k}_ms": v * 1000 for k, v in interleaved(fns, reps, device).items()}


def bench_owl_direct(args, work: Path) -> dict:
    """OWL end to end (one 640x480 photo, 20 classes) against what a user who knows
    transformers writes: all labels in one call, the whole model cast to bf16 (fp16 on a GPU
    without bf16), inference mode, the stock processor and `post_process_grounded_object_detection`.
    Then where each side's time goes: preparing the inputs, the forward, what follows it."""
    from PIL import Image
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    from ovdet import Detector
    from ovdet.runtime import resolve_precision

    folder = work / args.owl
    if not folder.exists():
        save_owl(args.owl, folder)
    device = torch.device(args.device)
    dtype = resolve_precision("auto", device)
    dtype = torch.bfloat16 if dtype == torch.float32 else dtype  # the peer casts to bf16 on any CPU
    image = test_image()
    pil = Image.fromarray(image)
    det = Detector.from_pretrained(str(folder), precision="auto", device=args.device, cache_text=False)
    det.class_embeddings(tuple(CLASSES20))  # a vocabulary is encoded once per run (cached after)
    processor = AutoProcessor.from_pretrained(str(folder))
    model = AutoModelForZeroShotObjectDetection.from_pretrained(str(folder)).to(device, dtype).eval()

    def direct_inputs():
        inputs = processor(text=[CLASSES20], images=pil, return_tensors="pt").to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        return inputs

    @torch.inference_mode()
    def direct():
        outputs = model(**direct_inputs())
        return processor.post_process_grounded_object_detection(outputs, threshold=0.1, target_sizes=[image.shape[:2]])

    secs = interleaved({"ovdet": lambda: det.detect(image, CLASSES20), "transformers_direct": direct}, args.reps,
                       args.device)
    # where the time goes, each side (stages timed interleaved among themselves)
    backend, embeds = det.backend, det.class_embeddings(tuple(CLASSES20))
    pixels = backend.preprocess([image])
    inputs = direct_inputs()
    with torch.inference_mode():
        outputs = model(**inputs)
    stages = stage_times({
        "ovdet_preprocess": lambda: backend.preprocess([image]),
        "ovdet_forward": lambda: backend.class_logits(backend.image_features(pixels)[0], embeds),
        "ovdet_backend_predict": lambda: backend.predict([image], embeds),  # preprocess + forward + boxes
        "ovdet_detect": lambda: det.detect(image, CLASSES20),  # + the Detector's threshold, NMS, Detections
        "direct_processor": direct_inputs,
        "direct_forward": lambda: torch.inference_mode()(model)(**inputs),
        "direct_post_process": lambda: processor.post_process_grounded_object_detection(
            outputs, threshold=0.1, target_sizes=[image.shape[:2]]),
    }, args.reps, args.device)
    out = {"ovdet_ms": secs["ovdet"] * 1000, "transformers_direct_ms": secs["transformers_direct"] * 1000,
           "speedup_vs_direct": secs["transformers_direct"] / secs["ovdet"], "architecture": args.owl,
           "classes": len(CLASSES20), "direct_dtype": str(dtype).replace("torch.", "")}
    out.update(stages)
    # outside the forward, as measured stages (differences of end-to-end times drown in noise)
    out["direct_outside_forward_ms"] = stages["direct_processor_ms"] + stages["direct_post_process_ms"]
    return out


# -- CLIP regions -----------------------------------------------------------------------------
def bench_clip(args, work: Path) -> dict:
    import torch.nn.functional as F
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from ovdet import Detector
    from ovdet.backends.clip_regions import square_crops
    from ovdet.proposers import given_boxes

    folder = work / "clip-b32"
    CLIPModel(CLIPConfig()).save_pretrained(folder)  # openai/clip-vit-base-patch32's architecture
    CLIPProcessor(CLIPImageProcessor(), make_tiny_models.clip_tokenizer(max_length=77)).save_pretrained(folder)
    image = test_image()
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [560, 400], size=(100, 2))
    wh = rng.uniform(20, 200, size=(100, 2))
    boxes = np.clip(np.hstack([xy, xy + wh]), 0, [640, 480, 640, 480]).astype(np.float32)
    props = [given_boxes(boxes, 480, 640)]
    kw = dict(proposer="boxes", device=args.device, cache_text=False, templates="{}")
    dets = {
        "crop_fp32": Detector.from_pretrained(str(folder), precision="fp32", **kw),
        "crop_bf16": Detector.from_pretrained(str(folder), precision="bf16", **kw),
        "pooled_bf16": Detector.from_pretrained(str(folder), precision="bf16", region_mode="pooled", dense_size=448, **kw),
    }
    embeds = {k: d.class_embeddings(tuple(CLASSES20)) for k, d in dets.items()}

    reference = CLIPModel.from_pretrained(str(folder)).eval().to(args.device)
    processor = CLIPProcessor.from_pretrained(str(folder))
    text = embeds["crop_fp32"]

    @torch.inference_mode()
    def per_crop_reference():
        for crop in square_crops(image, torch.from_numpy(boxes), 1.2):
            pixels = processor(images=Image.fromarray(crop), return_tensors="pt")["pixel_values"].to(args.device)
            emb = F.normalize(reference.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
            emb @ text.T

    fns = {k: (lambda d=d, e=embeds[k]: d.backend.predict([image], e, props)) for k, d in dets.items()}
    fns["per_crop_reference_fp32"] = per_crop_reference
    secs = interleaved(fns, args.reps, args.device)
    ref = secs["per_crop_reference_fp32"]
    out = {f"{k}_seconds": v for k, v in secs.items()}
    out.update(boxes=100, pooled_speedup=ref / secs["pooled_bf16"], crop_speedup=ref / min(secs["crop_bf16"], secs["crop_fp32"]))
    return out


# -- YOLO -------------------------------------------------------------------------------------
def save_yolo(kind: str, yaml_name: str, work: Path) -> Path:
    """A full-size random ultralytics model from its YAML, saved as ultralytics saves it."""
    from ovdet.backends.yolo import ultralytics_offline

    ultralytics_offline()
    from ultralytics import YOLO, YOLOWorld

    path = work / yaml_name.replace(".yaml", "-random.pt")
    if not path.exists():
        torch.manual_seed(0)
        (YOLOWorld if kind == "world" else YOLO)(yaml_name).save(str(path))
    return path


def bench_yolo(args, work: Path) -> dict:
    """YOLO-World-S (its 80 built-in classes) and a class-agnostic YOLOv8s proposer on one
    1280x720 photo: ultralytics' own `predict` (fused fp32, as it runs on a CPU) vs ovdet end
    to end (Detector.detect with cached class embeddings; proposer.propose) in fp32 and in the
    path `precision: auto` picks. Random weights leave NMS almost nothing to do in both."""
    from ultralytics import YOLO, YOLOWorld

    from ovdet import Detector, load_config
    from ovdet.backends.yolo import YoloProposer
    from ovdet.runtime import resolve_precision

    device = torch.device(args.device)
    world_pt = save_yolo("world", "yolov8s-worldv2.yaml", work)
    det_pt = save_yolo("detect", "yolov8s.yaml", work)
    text = make_tiny_models.make_clip(work / "clip512", projection_dim=512)  # text is cached: size is moot
    image = test_image(720, 1280)
    bgr = np.ascontiguousarray(image[..., ::-1])  # ultralytics' predict takes cv2's BGR order
    ref_world, ref_det = YOLOWorld(str(world_pt)), YOLO(str(det_pt))
    names = [ref_world.names[i] for i in range(len(ref_world.names))]
    auto = resolve_precision("auto", device)
    modes = {"fp32": "fp32", "auto": "auto"} if auto != torch.float32 else {"fp32": "fp32"}
    worlds = {m: Detector.from_config(load_config("yolo-world-s", weights=str(world_pt), text_weights=str(text),
                                                  precision=p, device=args.device, cache_text=False))
              for m, p in modes.items()}
    for d in worlds.values():
        d.class_embeddings(tuple(names))  # encoded once, as in any run over many images
    props = {m: YoloProposer(det_pt, device, conf=0.05, iou=0.6, max_det=100, dtype=resolve_precision(p, device))
             for m, p in modes.items()}
    # ultralytics' fastest setting on a GPU is fp16 (`half`); on a CPU it runs fp32 only
    gpu = {"half": True} if args.device.startswith("cuda") else {}
    fns = {"ultralytics_world_predict": lambda: ref_world.predict(bgr, imgsz=640, verbose=False, device=args.device,
                                                                  **gpu)}
    fns.update({f"ovdet_world_{m}": (lambda d=d: d.detect(image, names)) for m, d in worlds.items()})
    fns["ultralytics_yolo_predict"] = lambda: ref_det.predict(bgr, imgsz=640, conf=0.05, iou=0.6, agnostic_nms=True,
                                                              max_det=100, verbose=False, device=args.device, **gpu)
    fns.update({f"ovdet_proposer_{m}": (lambda p=p: p.propose([image])) for m, p in props.items()})
    secs = interleaved(fns, args.reps, args.device)
    best = "auto" if "auto" in modes else "fp32"
    out = {f"{k}_ms": v * 1000 for k, v in secs.items()}
    out.update(
        image="1280x720", classes=len(names), auto_path=worlds[best].backend.runner.path,
        world_speedup_vs_ultralytics=secs["ultralytics_world_predict"] / secs[f"ovdet_world_{best}"],
        world_fp32_speedup_vs_ultralytics=secs["ultralytics_world_predict"] / secs["ovdet_world_fp32"],
        proposer_speedup_vs_ultralytics=secs["ultralytics_yolo_predict"] / secs[f"ovdet_proposer_{best}"],
    )
    return out


# -- video ------------------------------------------------------------------------------------
def make_video(path: Path, frames: int, size: tuple[int, int] = (1280, 720), fps: float = 25.0) -> Path:
    """A `frames`-long mp4v clip of the example photo panning across a 720p frame."""
    import cv2

    w, h = size
    photo = cv2.cvtColor(test_image(h + frames, w + frames * 2), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        writer.write(np.ascontiguousarray(photo[i: i + h, 2 * i: 2 * i + w]))
    writer.release()
    return path


def bench_video(args, work: Path) -> dict:
    """`ovdet video` on a 720p file (decode, detect 20 classes, draw, encode mp4, JSONL), run
    in-process through the CLI entry point, against the detector's own throughput on the same
    frames already decoded (`detect_batch`, same batch size): how much of the detector's speed
    the video pipeline keeps. The CLI's frame rate is its own summary line: model loading and
    its warm-up batch (`Detector.warmup`) are excluded, so it is compared with a warmed-up
    detector's (like for like; the target is >= 0.9x) and, for reference, with a freshly
    loaded one's, whose first batch pays oneDNN's kernel set-up; interleaved, `--reps` times
    each (at most 3)."""
    import contextlib
    import io
    import re

    import cv2

    from ovdet import Detector
    from ovdet.cli.app import main as ovdet_main

    folder = work / args.owl
    if not folder.exists():
        save_owl(args.owl, folder)
    clip = make_video(work / "clip720p.mp4", args.video_frames)
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    classes = ",".join(CLASSES20)

    def detector_only(warm: bool) -> float:
        """The detector's frames/s on the decoded frames. Cold: a freshly loaded detector, as
        the CLI's clock sees it (its first batch pays oneDNN's one-time kernel set-up)."""
        det = Detector.from_pretrained(str(folder), precision="auto", device=args.device, cache_text=False)
        if warm:
            det.detect_batch(frames[: det.config.batch_size], CLASSES20)
        start = time.perf_counter()
        det.detect_batch(frames, CLASSES20)
        sync(args.device)
        return len(frames) / (time.perf_counter() - start)

    def cli() -> float:
        err = io.StringIO()
        argv = ["video", str(clip), "--classes", classes, "--model", str(folder), "--device", args.device,
                "--out", str(work / "out.mp4"), "--jsonl", str(work / "out.jsonl"), "--no-progress",
                "--threads", str(args.threads)]
        with contextlib.redirect_stderr(err):
            code = ovdet_main(argv)
        found = re.search(r"(\d+) frames, .*\(([\d.]+) fps\)", err.getvalue())
        if code != 0 or not found or int(found.group(1)) != len(frames):
            raise SystemExit(f"ovdet video failed ({code}): {err.getvalue()[-500:]}")
        return float(found.group(2))

    runs: dict[str, list[float]] = {"detector_fps": [], "detector_warm_fps": [], "video_cli_fps": []}
    for _ in range(max(1, min(args.reps, 3))):
        runs["detector_fps"].append(detector_only(warm=False))
        runs["video_cli_fps"].append(cli())
        runs["detector_warm_fps"].append(detector_only(warm=True))
    out = {k: statistics.median(v) for k, v in runs.items()}
    out.update(frames=len(frames), size="1280x720", model=args.owl,
               video_over_detector=out["video_cli_fps"] / out["detector_fps"],
               video_over_warm_detector=out["video_cli_fps"] / out["detector_warm_fps"])
    return out


# -- text cache -------------------------------------------------------------------------------
def lvis_names() -> list[str]:
    path = ROOT.parent / "shared" / "data" / "metadata" / "lvis_v1_categories.json"
    if path.is_file():
        cats = json.loads(path.read_text())
        cats = cats["categories"] if isinstance(cats, dict) else cats
        return [c["name"].replace("_", " ") for c in sorted(cats, key=lambda c: c["id"])]
    return [f"object class {i}" for i in range(1203)]  # same size when the shared data is absent


def bench_cache(args, work: Path) -> dict:
    from ovdet.cache import TextEmbeddingCache
    from ovdet.clip import ClipModel
    from ovdet.runtime import resolve_precision
    from ovdet.text import TEMPLATE_SETS, VocabularyEncoder

    folder = work / "clip-b32"
    if not folder.exists():
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

        CLIPModel(CLIPConfig()).save_pretrained(folder)
        CLIPProcessor(CLIPImageProcessor(), make_tiny_models.clip_tokenizer(max_length=77)).save_pretrained(folder)
    device = torch.device(args.device)
    clip = ClipModel.load(folder, device, resolve_precision("auto", device))
    names = lvis_names()
    cache = TextEmbeddingCache(work / "cache")
    templates = TEMPLATE_SETS["photo"]
    first = timed(lambda: VocabularyEncoder(clip.encode_text, clip.identity, templates, cache)(names), args.device)
    second = timed(lambda: VocabularyEncoder(clip.encode_text, clip.identity, templates, cache)(names), args.device)
    return dict(classes=len(names), templates=len(templates), first_seconds=first, second_seconds=second,
                second_over_first=second / first)


# -- memory -----------------------------------------------------------------------------------
def bench_memory(args, work: Path) -> dict:
    import psutil

    from ovdet import Detector

    folder = work / args.owl
    if not folder.exists():
        save_owl(args.owl, folder)
    det = Detector.from_pretrained(str(folder), precision="auto", device=args.device, cache_text=False)
    image = test_image()
    proc = psutil.Process()
    for _ in range(10):
        det.detect(image, CLASSES20)
    start = proc.memory_info().rss
    t = time.perf_counter()
    for _ in range(args.memory_images):
        det.detect(image, CLASSES20)
    return dict(images=args.memory_images, rss_start_mb=start / 2**20,
                rss_delta_mb=(proc.memory_info().rss - start) / 2**20,
                images_per_s=args.memory_images / (time.perf_counter() - t))


# -- tiles ------------------------------------------------------------------------------------
def write_huge_png(path: Path, side: int) -> Path:
    """A side x side 8-bit RGB PNG (grey, a dark band), streamed row by row through zlib."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    grey = bytes([128]) * (side * 3)
    band = bytearray(grey)
    band[side // 4 * 3 : side // 2 * 3] = bytes([30, 60, 200]) * (side // 2 - side // 4)
    comp = zlib.compressobj(1)
    parts = [comp.compress(b"\x00" + (bytes(band) if side // 4 <= y < side // 4 + side // 20 else grey))
             for y in range(side)] + [comp.flush()]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def peak_rss_of_cli(args: list[str], threads: int) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of `python -m ovdet ARGS` in a fresh process (its own peak:
    the wrapper's only child)."""
    import subprocess

    code = ("import resource, subprocess, sys; rc = subprocess.run([sys.executable, '-m', 'ovdet', *sys.argv[1:]]).returncode;"
            " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args, "--threads", str(threads)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"ovdet {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    return int(proc.stdout.strip().splitlines()[-1]) / 1e6, time.perf_counter() - t


def bench_tiles(args, work: Path) -> dict:
    """Sliced inference: tiles/s with the tiles of an image batched (`--tile-batch`) vs one per
    forward pass (what SAHI and supervision's InferenceSlicer do), interleaved in one process;
    then peak RSS of `ovdet detect` on a 20000 x 20000 PNG, whole and tiled (fresh processes)."""
    from ovdet import Detector
    from ovdet.tiling import tile_windows

    folder = work / args.owl
    if not folder.exists():
        save_owl(args.owl, folder)
    image = test_image(1920, 2560)
    tiles = len(tile_windows(1920, 2560, args.tile, 0.2))
    kw = dict(device=args.device, cache_text=False, tile=args.tile, tile_overlap=0.2)
    dets = {f"batch_{b}": Detector.from_pretrained(str(folder), batch_size=b, **kw) for b in (args.tile_batch, 1)}
    fns = {k: (lambda d=d: d.detect(image, CLASSES20)) for k, d in dets.items()}
    secs = interleaved(fns, args.reps, args.device)
    out = {"architecture": args.owl, "image": "2560x1920", "tile": args.tile, "tiles": tiles}
    out.update({f"{k}_tiles_per_s": tiles / v for k, v in secs.items()})
    out["batched_speedup"] = secs["batch_1"] / secs[f"batch_{args.tile_batch}"]
    huge = write_huge_png(work / "huge.png", args.huge_side)
    common = ["detect", str(huge), "--classes", "road,car", "--model", str(folder), "--device", args.device,
              "--json", str(work / "huge.json")]
    for name, extra in (("whole", []), ("tiled", ["--tile", str(args.huge_tile), "--tile-overlap", "0.1",
                                                  "--batch-size", str(args.tile_batch)])):
        gb, sec = peak_rss_of_cli(common + extra, args.threads)
        out[f"huge_{name}_peak_rss_gb"], out[f"huge_{name}_seconds"] = gb, sec
    out["huge_side"], out["huge_tile"] = args.huge_side, args.huge_tile
    return out


def bench_onnx(args, work: Path) -> dict:
    from ovdet import Detector
    from ovdet.export.exporter import export_detector

    folder = work / args.owl
    if not folder.exists():
        save_owl(args.owl, folder)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # onnxruntime's intra-op threads (ovdet reads it)
    start = time.perf_counter()
    export_detector(str(folder), work / f"{args.owl}-onnx")
    export_seconds = time.perf_counter() - start
    image = test_image()
    kw = dict(device="cpu", cache_text=False)
    dets = {"onnxruntime_fp32": Detector.from_pretrained(str(work / f"{args.owl}-onnx"), **kw),
            "ovdet_torch_bf16": Detector.from_pretrained(str(folder), precision="bf16", **kw),
            "ovdet_torch_fp32": Detector.from_pretrained(str(folder), precision="fp32", **kw)}
    secs = interleaved({k: (lambda d=d: d.detect(image, CLASSES20)) for k, d in dets.items()}, args.reps, args.device)
    out = {f"{k}_images_per_s": 1 / v for k, v in secs.items()}
    out.update(architecture=args.owl, classes=len(CLASSES20), image="640x480", export_seconds=export_seconds,
               onnx_over_torch_bf16=secs["ovdet_torch_bf16"] / secs["onnxruntime_fp32"],
               onnx_over_torch_fp32=secs["ovdet_torch_fp32"] / secs["onnxruntime_fp32"])
    return out


# -- CLIP regions -----------------------------------------------------------------------------


from bench_masks import bench_masks  # noqa: E402  (tools/bench_masks.py)


def bench_sam3(args, work: Path) -> dict:
    import bench_sam3

    return bench_sam3.bench_sam3(args, interleaved, test_image(), make_tiny_models.clip_tokenizer(32))


def bench_search(args, work: Path) -> dict:
    import bench_search as search  # tools/bench_search.py

    return search.run(args, work, save_owl, CLASSES20)


def bench_grounded(args, work: Path) -> dict:
    from bench_grounded import bench_grounded as run  # its own module: this file is long enough

    return run(args, work)


SECTIONS = {"peak": None, "owl": bench_owl, "clip": bench_clip, "cache": bench_cache, "memory": bench_memory,
            "tiles": bench_tiles, "yolo": bench_yolo, "owl-direct": bench_owl_direct, "video": bench_video, "onnx": bench_onnx,
            "sam3": bench_sam3, "search": bench_search, "grounded": bench_grounded, "masks": bench_masks}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="peak,owl,clip,cache", help=f"sections: {','.join(SECTIONS)}")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--owl", default="owlvit-b32", choices=["owlvit-b32", "owlv2-b16"])
    parser.add_argument("--batch", type=int, default=1, help="images per forward (OWL)")
    parser.add_argument("--memory-images", type=int, default=500)
    parser.add_argument("--compile", action="store_true", help="owl: torch.compile the image tower (compile: true)")
    parser.add_argument("--video-frames", type=int, default=48, help="frames of the 720p clip (video)")
    parser.add_argument("--tile", type=int, default=640, help="tile side for the tiles/s part of `tiles`")
    parser.add_argument("--tile-batch", type=int, default=8, help="tiles per forward pass, batched mode of `tiles`")
    parser.add_argument("--huge-side", type=int, default=20000, help="side of the huge PNG of `tiles`")
    parser.add_argument("--huge-tile", type=int, default=2000, help="tile side for the huge PNG, tiled")
    parser.add_argument("--sam3-size", type=int, default=560, help="sam3: input side in px (the checkpoint's: 1008)")
    parser.add_argument("--sam3-classes", default="1,10,80", help="sam3: class counts to time")
    parser.add_argument("--sam3-reference-max", type=int, default=10,
                        help="sam3: most classes run through transformers per class (beyond: extrapolated)")
    parser.add_argument("--sam3-precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--sam3-reps", type=int, default=1)
    parser.add_argument("--search-images", type=int, default=16, help="images indexed vs detected (search)")
    parser.add_argument("--search-rows", default="10000,1000000", help="stored regions for query latency (search)")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    results: dict = {"device": args.device, "threads": args.threads, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        for section in args.only.split(","):
            if section not in SECTIONS:
                parser.error(f"unknown section {section!r}")
            fn = SECTIONS[section]
            res = bench_peak(args.device, args.reps) if fn is None else fn(args, Path(tmp))
            results[section] = res
            print(f"[{section}]")
            for k, v in res.items():
                print(f"  {k:<32} {v:.4g}" if isinstance(v, float) else f"  {k:<32} {v}")
            sys.stdout.flush()
    if "owl" in results:
        print("[summary]")
        print(f"  owl forward / bf16 matmul peak, timed interleaved  {results['owl']['fraction_of_peak']:.1%}")
        if "peak" in results:
            ratio = results["owl"]["fastest_achieved_tflops"] / results["peak"]["matmul_bf16_tflops"]
            results["owl_fraction_of_bf16_peak_section"] = ratio
            print(f"  owl forward / bf16 matmul peak of the [peak] section  {ratio:.1%}")
    results["threads"] = torch.get_num_threads()  # what ran: ovdet caps it at the CPUs allowed
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
