"""Export a detector (preset, config, checkpoint folder) to a folder of ONNX graphs.

OWL presets: `image.onnx` (pixels -> token features, boxes [, objectness]), `class_head.onnx`
(token features + C class embeddings -> logits, C dynamic) and `text.onnx` (token ids + mask
-> text embeddings). CLIP region presets (crop mode): `image.onnx` (crops -> unit embeddings),
`text.onnx`, and `proposer.onnx` when the proposer is OWLv2's objectness head (sliding windows
and user boxes need no graph). Every graph has a dynamic batch. Alongside: `tokenizer/` (the
tokenizer files, read with the `tokenizers` library) and `manifest.json`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..config import DetectorConfig
from ..errors import OvdetError
from .graphs import ClipImageGraph, OwlClassGraph, OwlImageGraph, TextGraph, export_graph
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST, NOT_EXPORTED, write_manifest

SUPPORTED = ("OWL-ViT and OWLv2 presets, and CLIP region presets in crop mode with the owlv2, windows or boxes "
             "proposer")
PRECISIONS = ("fp32", "fp16")


class ExportError(OvdetError):
    """The model cannot be exported, or the output folder is unusable."""


def unsupported_reason(cfg: DetectorConfig) -> str | None:
    """Why `cfg` cannot be exported (one line), or None."""
    what = None
    if cfg.backend == "yolo_world":
        what = "YOLO-World (ultralytics' own exporter bakes the vocabulary in)"
    elif cfg.backend == "clip" and cfg.region_mode != "crop":
        what = f"region_mode {cfg.region_mode!r} (RoIAlign over CLIP tokens)"
    elif cfg.backend == "clip" and cfg.proposer == "yolo":
        what = "the YOLO proposer"
    elif cfg.backend not in ("owl", "clip"):
        what = f"backend {cfg.backend!r}"
    return None if what is None else f"cannot export {what}; ovdet exports {SUPPORTED}"


def _prepare_folder(out: Path) -> None:
    """An empty or absent folder, or an earlier export (replaced); anything else is refused so
    an export never mixes with, or deletes, unrelated files."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise ExportError(f"--out {out} is not empty and holds no ovdet export: choose a new or empty folder")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _tokenizer(tokenizer, out: Path, pad_to: str, context: int) -> dict:
    """Saves the tokenizer files to out/tokenizer/; the manifest entry says how to pad.
    `context`: the text tower's own length (`max_position_embeddings`), which prompts are
    truncated (and for OWL padded) to: a tokenizer may lack `model_max_length`."""
    folder = out / "tokenizer"
    tokenizer.save_pretrained(str(folder))
    if not (folder / "tokenizer.json").is_file():
        raise ExportError("the model's tokenizer has no tokenizer.json (a fast tokenizer is needed)")
    return {"file": "tokenizer/tokenizer.json", "max_length": int(context),
            "pad_id": int(tokenizer.pad_token_id), "pad_to": pad_to}


def _image_preprocess(image_processor, kind: str) -> dict:
    size = image_processor.size
    side = int(size["height"]) if "height" in size else int(size["shortest_edge"])
    return {"mode": kind, "size": side, "mean": [float(v) for v in image_processor.image_mean],
            "std": [float(v) for v in image_processor.image_std]}


def _example_text(tokenizer, pad_to: str, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, T) input_ids and attention_mask of two prompts of different lengths, padded as the
    runtime pads them (to `context` or to the longer one)."""
    padding = "max_length" if pad_to == "max_length" else "longest"
    tok = tokenizer(["a photo of a cat", "a dog"], padding=padding, max_length=context, truncation=True,
                    return_tensors="pt")
    return tok["input_ids"], tok["attention_mask"]


def to_fp16(path: Path) -> None:
    """Rewrite an fp32 graph in float16, its inputs and outputs kept float32 (onnxruntime's
    converter). Tracing the towers in half precision instead gave graphs with mixed-type
    LayerNorms that onnxruntime refuses."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(path))


def _export_owl(backend, out: Path, opset: int, say: Callable[[str], None]) -> dict:
    model = backend.model
    clip_attr = "owlv2" if hasattr(model, "owlv2") else "owlvit"
    pads = backend.pads_to_square
    pre = _image_preprocess(backend.processor.image_processor, "padded_square" if pads else "square_resize")
    objectness = hasattr(model, "objectness_predictor")
    pixels = torch.zeros(1, 3, pre["size"], pre["size"])
    say("image tower")
    image_graph = OwlImageGraph(model, objectness=objectness)
    with torch.no_grad():
        feats = image_graph(pixels)[0]
    p, d = feats.shape[1:]
    outputs = {"image_feats": ["batch", p, d], "boxes": ["batch", p, 4]}
    if objectness:
        outputs["objectness"] = ["batch", p]
    image = export_graph(image_graph, [pixels], out / "image.onnx",
                         {"pixel_values": ["batch", 3, pre["size"], pre["size"]]}, outputs, opset)
    say("class head")
    pad_to = "max_length"  # as OwlBackend.encode_text: OWL's text tower saw 16-token inputs
    context = model.config.text_config.max_position_embeddings
    ids, mask = _example_text(backend.processor.tokenizer, pad_to, context)
    text_graph = TextGraph(getattr(model, clip_attr))
    with torch.no_grad():
        embeds = text_graph(ids, mask)
    head = export_graph(OwlClassGraph(model), [feats, embeds], out / "class_head.onnx",
                        {"image_feats": ["batch", feats.shape[1], feats.shape[2]], "class_embeds": ["classes", embeds.shape[1]]},
                        {"logits": ["batch", feats.shape[1], "classes"]}, opset)
    say("text tower")
    text = export_graph(text_graph, [ids, mask], out / "text.onnx",
                        {"input_ids": ["prompts", "tokens"], "attention_mask": ["prompts", "tokens"]},
                        {"text_embeds": ["prompts", embeds.shape[1]]}, opset)
    return {"family": "owl", "model_type": model.config.model_type, "preprocess": pre,
            "boxes": {"format": "cxcywh normalised", "pads_to_square": pads},
            "graphs": {"image": image, "class_head": head, "text": text},
            "tokenizer": _tokenizer(backend.processor.tokenizer, out, pad_to, context)}


def _export_clip(backend, cfg: DetectorConfig, out: Path, opset: int, say: Callable[[str], None]) -> dict:
    clip = backend.clip
    model = clip.model
    pre = _image_preprocess(clip.processor.image_processor, "square_resize")
    pre["size"] = clip.image_size  # crops are squares resized straight to the tower's input
    side = pre["size"]
    say("image tower")
    graph = ClipImageGraph(model)
    with torch.no_grad():
        dim = graph(torch.zeros(1, 3, side, side)).shape[1]
    image = export_graph(graph, [torch.zeros(2, 3, side, side)], out / "image.onnx",
                         {"pixel_values": ["batch", 3, side, side]}, {"image_embeds": ["batch", dim]}, opset)
    say("text tower")
    pad_to = "longest"  # as ClipModel.encode_text: the causal mask makes padding after EOS inert
    context = model.config.text_config.max_position_embeddings
    ids, mask = _example_text(clip.processor.tokenizer, pad_to, context)
    text = export_graph(TextGraph(model, normalise=True), [ids, mask], out / "text.onnx",
                        {"input_ids": ["prompts", "tokens"], "attention_mask": ["prompts", "tokens"]},
                        {"text_embeds": ["prompts", dim]}, opset)
    graphs = {"image": image, "text": text}
    proposer: dict = {"kind": cfg.proposer}
    if cfg.proposer == "owlv2":
        owl = backend.proposer.owl
        say("OWLv2 proposer")
        ppre = _image_preprocess(owl.processor.image_processor, "padded_square")
        s = ppre["size"]
        graph = OwlImageGraph(owl.model, objectness=True, feats=False)
        with torch.no_grad():
            p = graph(torch.zeros(1, 3, s, s))[0].shape[1]
        graphs["proposer"] = export_graph(graph, [torch.zeros(1, 3, s, s)], out / "proposer.onnx",
                                          {"pixel_values": ["batch", 3, s, s]},
                                          {"boxes": ["batch", p, 4], "objectness": ["batch", p]}, opset)
        proposer.update(preprocess=ppre, boxes={"format": "cxcywh normalised", "pads_to_square": True},
                        top_k=backend.proposer.top_k)
    elif cfg.proposer == "windows":
        windows = backend.proposer
        proposer.update(scales=list(windows.scales), ratios=list(windows.ratios), overlap=windows.overlap)
    return {"family": "clip", "model_type": "clip", "preprocess": pre, "graphs": graphs, "proposer": proposer,
            "crop_context": backend.crop_context, "tokenizer": _tokenizer(clip.processor.tokenizer, out, pad_to, context)}


def export_detector(model: str, out: Path, opset: int = 17, precision: str = "fp32",
                    say: Callable[[str], None] = lambda _: None) -> dict:
    """Export the detector `model` names (as `Detector.from_pretrained` takes it) to `out`.

    Returns the manifest. Raises `ExportError` (one line) for unsupported models or folders.
    """
    from ..calibration import weights_identity  # a calibration of the source model serves the export
    from ..detector import Detector, resolve_config
    from .manifest import is_export_dir

    if precision not in PRECISIONS:
        raise ExportError(f"--precision must be fp32 or fp16, got {precision!r}")
    if is_export_dir(model):
        raise ExportError(f"{model} is already an ONNX export; export the model it came from")
    cfg = resolve_config(model)
    reason = unsupported_reason(cfg)
    if reason:
        raise ExportError(reason)
    _prepare_folder(out)
    start = time.perf_counter()
    say(f"loading {model}")
    det = Detector.from_config(cfg.replace(device="cpu", precision="fp32", compile=False, cache_text=False))
    backend = det.backend
    if cfg.backend == "owl":
        body = _export_owl(backend, out, opset, say)
        settings = cfg.to_dict()
    else:
        body = _export_clip(backend, cfg, out, opset, say)
        # the scorer's resolved temperature: "0 = the model's own" needs the model to resolve
        settings = {**cfg.to_dict(), "logit_scale": backend.scorer.logit_scale}
    if precision == "fp16":
        say("converting to fp16")
        for graph in body["graphs"].values():
            to_fp16(out / graph["file"])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ovdet_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # the checkpoint identity (path, sizes, mtimes) of the main model, as torch caches use it
        "model": {"source": str(model), "identity": backend.identity,
                  "model_type": body.pop("model_type"), "weights_identity": weights_identity(cfg)},
        "precision": precision,
        "opset": opset,
        "config": {k: v for k, v in settings.items() if k not in NOT_EXPORTED},
        **body,
    }
    write_manifest(out, manifest)
    say(f"exported to {out} in {time.perf_counter() - start:.1f} s")
    return manifest

