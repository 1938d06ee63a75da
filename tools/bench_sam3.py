"""`tools/bench.py --only sam3`: SAM 3 detecting 1, 10 and 80 classes in one photo, ovdet
(vision once, all prompts in one DETR batch, masks for the kept detections only) against
transformers' Sam3Model called once per class with `post_process_instance_segmentation`, as
its documentation does it. Full-size architecture (840 M parameters) with random weights, at
a reduced input size on a CPU (--sam3-size, default 560 px; the checkpoint's is 1008).

The per-class reference runs up to --sam3-reference-max classes (one full model call per
class: minutes on a CPU); beyond it its time is extrapolated linearly from the largest count
run, and reported as such. ovdet's time is split into vision encoder, text, DETR (encoder,
decoder and scoring for all prompts) and masks (mask decoder + upsampling of the kept ones).
"""

from __future__ import annotations

import time

import numpy as np
import torch

COCO80 = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
          "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
          "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
          "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
          "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
          "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
          "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
          "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
          "teddy bear", "hair drier", "toothbrush"]


def full_size_sam3(size: int, tokenizer):
    """Sam3Model with the checkpoint's architecture and random weights, input `size` px (a
    multiple of 14), and its processor."""
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    grid = size // 14
    cfg = Sam3Config(vision_config=dict(backbone_config=dict(model_type="sam3_vit_model", image_size=size),
                                        backbone_feature_sizes=[[grid * 4] * 2, [grid * 2] * 2, [grid] * 2]))
    torch.manual_seed(0)
    model = Sam3Model(cfg).eval()
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(size={"height": size, "width": size},
                                                                 mask_size={"height": grid * 4, "width": grid * 4}),
                              tokenizer=tokenizer)
    return model, processor


def bench_sam3(args, interleaved, image: np.ndarray, tokenizer) -> dict:
    """The section's figures (seconds, speedups, the split); `interleaved` is bench.py's."""
    from ovdet import Detector
    from ovdet.backends.sam3 import Sam3Backend
    from ovdet.config import load_config

    device, dtype = torch.device(args.device), {"fp32": torch.float32, "bf16": torch.bfloat16}[args.sam3_precision]
    model, processor = full_size_sam3(args.sam3_size, tokenizer)
    backend = Sam3Backend(model, processor, device, dtype, identity="bench")
    config = load_config("sam3", device=args.device, precision=args.sam3_precision, cache_text=False)
    det = Detector(backend, config)
    counts = [int(c) for c in args.sam3_classes.split(",")]

    def ovdet_run(n):
        backend.prompt_memory.clear()  # a new vocabulary each time: text is part of the cost
        det.class_table.text._memory.clear()
        det.detect(image, COCO80[:n])

    @torch.inference_mode()
    def per_class(n):
        for name in COCO80[:n]:
            inputs = processor(images=image, text=name, return_tensors="pt").to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            out = model(**inputs)
            processor.post_process_instance_segmentation(out, threshold=config.threshold, target_sizes=[image.shape[:2]])

    out: dict = {"architecture": "Sam3Model full size, random weights", "input_px": args.sam3_size,
                 "precision": args.sam3_precision, "image": f"{image.shape[1]}x{image.shape[0]}"}
    ref_done: dict[int, float] = {}
    ovdet_run(1)  # first-call costs (oneDNN kernel choice, CUDA start) out of the timings
    for n in counts:
        named = {"ovdet": lambda n=n: ovdet_run(n)}
        if n <= args.sam3_reference_max:
            named["per_class"] = lambda n=n: per_class(n)
        secs = interleaved(named, args.sam3_reps, args.device, warmup=0)
        out[f"ovdet_{n}_classes_s"] = secs["ovdet"]
        if "per_class" in secs:
            ref_done[n] = secs["per_class"]
            out[f"per_class_{n}_classes_s"] = secs["per_class"]
        else:
            largest = max(ref_done)
            out[f"per_class_{n}_classes_s_extrapolated"] = ref_done[largest] / largest * n
        ref = ref_done.get(n, out.get(f"per_class_{n}_classes_s_extrapolated"))
        out[f"speedup_{n}_classes"] = ref / secs["ovdet"]
    out.update(split(det, backend, image, max(counts), args.device))
    return out


def split(det, backend, image: np.ndarray, n: int, device: str) -> dict:
    """ovdet's stages for `n` classes, each timed once: vision encoder, text, DETR, masks of the
    10 best candidates."""
    backend.prompt_memory.clear()
    features: list = []
    vision = timed(lambda: features.extend(backend.encode_images([image])), device)
    table: list = []
    text = timed(lambda: table.append(backend.ensemble_prompts(backend.encode_text(COCO80[:n]), 1)), device)
    cands: list = []
    detr = timed(lambda: cands.extend(backend.score(features, table[0])), device)
    best = torch.topk(cands[0].scores.max(dim=1).values, 10).indices.cpu().numpy()
    masks = timed(lambda: cands[0].masks.select(best, image.shape[:2]), device)
    return {f"split_{n}_classes_vision_s": vision, f"split_{n}_classes_text_s": text,
            f"split_{n}_classes_detr_s": detr, "split_masks_10_detections_s": masks}


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start
