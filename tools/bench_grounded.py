"""The `grounded` section of tools/bench.py: Grounding DINO-T, MM-Grounding-DINO-T and
OmDet-Turbo-T (full-size architectures, random weights, offline tokenizers) on one 1280x720
photo, 20 classes and LVIS's 1,203, ovdet against the direct transformers call and the
zero-shot-object-detection pipeline, interleaved in one process.

    python tools/bench.py --only grounded --reps 1 --json grounded.json

What each side does:
  ovdet      Detector.detect (fp32): for the DINO family one backbone pass per image, the
             vocabulary in chunks of <= 256 tokens (the text tower once per chunk, cached);
             OmDet: image tower + encoder once, class embeddings cached.
  direct     what a transformers user writes: processor -> model -> post-processing, fp32,
             inference mode; for a vocabulary over 256 tokens, one full call per chunk (the
             same chunks as ovdet), since one call would truncate the prompt.
  pipeline   transformers' zero-shot-object-detection pipeline: one full forward per label.
             Timed on 20 labels once (it is slow); for 1,203 labels its time is extrapolated
             (x 1203 / 20) and marked so. OmDet-Turbo does not run in the pipeline (its
             processor needs class lists, not a single label): recorded as an error.
The BERT vocabulary is written locally (30,522 entries, the class names' words as whole
tokens), so LVIS chunk counts approximate the real tokenizer's.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from bench import CLASSES20, interleaved, lvis_names, test_image
import make_tiny_models


def dino_model(mm: bool, words):
    from transformers import (GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor,
                              MMGroundingDinoForObjectDetection)

    config = make_tiny_models.grounding_dino_config(mm=mm, tiny=False, vocab_size=30522)
    model = (MMGroundingDinoForObjectDetection if mm else GroundingDinoForObjectDetection)(config).eval()
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(),
                                       tokenizer=make_tiny_models.bert_tokenizer(words, vocab_size=30522))
    return model, processor


def omdet_model():
    from transformers import DetrImageProcessor, OmDetTurboForObjectDetection, OmDetTurboProcessor

    model = OmDetTurboForObjectDetection(make_tiny_models.omdet_turbo_config(tiny=False)).eval()
    image_processor = DetrImageProcessor(size={"height": 640, "width": 640}, do_pad=False,
                                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return model, OmDetTurboProcessor(image_processor=image_processor, tokenizer=make_tiny_models.clip_tokenizer(77))


def ovdet_detector(backend, preset: str):
    from ovdet import Detector
    from ovdet.config import load_config

    return Detector(backend, load_config(preset, precision="fp32", device="cpu", cache_text=False))


def bench_dino(args, mm: bool, pipeline: bool) -> dict:
    from PIL import Image
    from transformers import pipeline as hf_pipeline

    from ovdet.backends.grounding import GroundingBackend

    lvis = lvis_names()
    words = {w for name in CLASSES20 + lvis for w in name.lower().replace("(", " ").replace(")", " ").split()}
    model, processor = dino_model(mm, words)
    reference = copy.deepcopy(model)  # the backend wraps its model's towers
    device = torch.device(args.device)
    det = ovdet_detector(GroundingBackend(model, processor, device, torch.float32),
                         "mm-grounding-dino-tiny" if mm else "grounding-dino-tiny")
    reference.to(device)
    image = test_image(720, 1280)
    pil = Image.fromarray(image)
    table = det.class_table.embed(det.resolve_classes(lvis).vocabulary)
    chunks = [[lvis[i] for i in c.classes] for c in table.chunks]

    @torch.inference_mode()
    def direct(names_lists):
        out = []
        for names in names_lists:
            inputs = processor(images=pil, text=[names], return_tensors="pt").to(device)
            outputs = reference(**inputs)
            out += processor.post_process_grounded_object_detection(outputs, inputs["input_ids"], threshold=0.3,
                                                                     target_sizes=[image.shape[:2]])
        return out

    res: dict = {"lvis_chunks": len(chunks)}
    secs = interleaved({"ovdet_20": lambda: det.detect(image, CLASSES20), "direct_20": lambda: direct([CLASSES20]),
                        "ovdet_lvis": lambda: det.detect(image, lvis), "direct_lvis": lambda: direct(chunks)},
                       args.reps, args.device)
    res.update({f"{k}_s": v for k, v in secs.items()})
    res["speedup_vs_direct_20"] = secs["direct_20"] / secs["ovdet_20"]
    res["speedup_vs_direct_lvis"] = secs["direct_lvis"] / secs["ovdet_lvis"]
    if pipeline:
        pipe = hf_pipeline("zero-shot-object-detection", model=reference, tokenizer=processor.tokenizer,
                           image_processor=processor.image_processor, device=device)
        import time

        t = time.perf_counter()
        pipe(pil, candidate_labels=CLASSES20, threshold=0.3)
        res["pipeline_20_s"] = time.perf_counter() - t
        res["pipeline_lvis_s_extrapolated"] = res["pipeline_20_s"] * len(lvis) / len(CLASSES20)
        res["speedup_vs_pipeline_20"] = res["pipeline_20_s"] / secs["ovdet_20"]
        res["speedup_vs_pipeline_lvis_extrapolated"] = res["pipeline_lvis_s_extrapolated"] / secs["ovdet_lvis"]
    return res


def bench_omdet(args) -> dict:
    from PIL import Image
    from transformers import pipeline as hf_pipeline

    from ovdet.backends.omdet import OmDetBackend

    lvis = lvis_names()
    model, processor = omdet_model()
    reference = copy.deepcopy(model)
    device = torch.device(args.device)
    det = ovdet_detector(OmDetBackend(model, processor, device, torch.float32), "omdet-turbo")
    reference.to(device)
    image = test_image(720, 1280)
    pil = Image.fromarray(image)

    @torch.inference_mode()
    def direct(names):
        inputs = processor(images=pil, text=names, return_tensors="pt").to(device)
        outputs = reference(**inputs)
        return processor.post_process_grounded_object_detection(outputs, text_labels=names, threshold=0.3,
                                                                target_sizes=[image.shape[:2]])

    secs = interleaved({"ovdet_20": lambda: det.detect(image, CLASSES20), "direct_20": lambda: direct(CLASSES20),
                        "ovdet_lvis": lambda: det.detect(image, lvis), "direct_lvis": lambda: direct(lvis)},
                       args.reps, args.device)
    res = {f"{k}_s": v for k, v in secs.items()}
    res["speedup_vs_direct_20"] = secs["direct_20"] / secs["ovdet_20"]
    res["speedup_vs_direct_lvis"] = secs["direct_lvis"] / secs["ovdet_lvis"]
    try:
        pipe = hf_pipeline("zero-shot-object-detection", model=reference, tokenizer=processor.tokenizer,
                           image_processor=processor.image_processor, device=device)
        pipe(pil, candidate_labels=CLASSES20[:2])
        res["pipeline"] = "ran"
    except Exception as exc:  # noqa: BLE001 - the figure is whether it runs at all
        res["pipeline"] = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return res


def bench_grounded(args, work: Path) -> dict:
    out = {}
    for name, fn in (("omdet_turbo_t", lambda: bench_omdet(args)),
                     ("grounding_dino_t", lambda: bench_dino(args, mm=False, pipeline=True)),
                     ("mm_grounding_dino_t", lambda: bench_dino(args, mm=True, pipeline=False))):
        for key, value in fn().items():
            out[f"{name}.{key}"] = value
        print(f"  ({name} done)", flush=True)
    out["image"] = "1280x720"
    out["precision"] = "fp32 both sides"
    return out
