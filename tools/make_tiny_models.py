#!/usr/bin/env python
"""Write tiny, randomly initialised checkpoints of every model family ovdet runs, for offline
trials and tests: OWL-ViT, OWLv2, CLIP, SAM 3, an ultralytics YOLO and a YOLO-World, and the
SAM 2 / SAM maskers (`--masks`).

    python tools/make_tiny_models.py /tmp/tiny
    ovdet detect examples/chelsea.jpg --classes "cat,dog" --model /tmp/tiny/owlv2
    ovdet classify examples/chelsea.jpg --classes "cat,dog" --model /tmp/tiny/clip
    ovdet detect examples/chelsea.jpg --classes "cat,dog" --model /tmp/tiny/yolo-world.yaml
    OVDET_WEIGHTS=/tmp/tiny/weights ovdet detect examples/chelsea.jpg --classes cat --model clip-b16-yolo-proposals

Written into the folder:
  owlvit/, owlv2/, clip/ (32-d joint space), clip512/ (512-d: YOLO-World's text width), sam3/,
  sam2/, sam/ (maskers: `--masks /tmp/tiny/sam2`)
      transformers checkpoints (config.json, model.safetensors, tokenizer and image-processor
      files) written by `save_pretrained`, loaded by ovdet exactly as hub checkpoints are;
  yolo.pt, yolo-world.pt
      ultralytics YOLOv8 and YOLOv8-Worldv2 built from ultralytics' own YAMLs at a tiny width,
      saved as ultralytics saves checkpoints (`Model.save`);
  clip-owlv2-proposals.yaml, clip-yolo-proposals.yaml, yolo-world.yaml
      configs for the composite presets (CLIP naming OWLv2 or YOLO proposals, YOLO-World with
      CLIP text embeddings), pointing at the files above: `--model /tmp/tiny/<name>.yaml`;
  weights/<preset>/, weights/<file>.pt
      every shipped preset name laid out as `ovdet weights download` would lay it out, linking
      to the tiny checkpoints: with `OVDET_WEIGHTS=/tmp/tiny/weights` (or the folder copied to
      ./weights) the preset names themselves run offline.

The tokenizer is the real CLIP BPE (49,408 tokens), built from the vocabulary file that the
open_clip_torch wheel ships; only the network weights are random, so detections are
meaningless but shapes, boxes and bookkeeping are the real code path.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

# Model geometry: small enough to run in milliseconds on a CPU, large enough to have a real
# patch grid (8x8 tokens) and several layers.
TINY_IMAGE_SIZE = 128
TINY_PATCH_SIZE = 16
TINY_TEXT_LEN = 16  # OWL checkpoints use 16 text tokens


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 byte-level BPE alphabet: each byte maps to a printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def clip_bpe_file() -> Path:
    """The CLIP BPE merges file shipped inside the open_clip_torch wheel."""
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover - message for people without the test extra
        raise SystemExit("tiny models need the CLIP vocabulary from open_clip_torch: pip install -e '.[test]'") from exc
    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def clip_tokenizer(max_length: int = TINY_TEXT_LEN):
    """A transformers CLIPTokenizer with the real CLIP vocabulary (as OpenAI built it)."""
    from transformers import CLIPTokenizer

    lines = gzip.open(clip_bpe_file(), "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the merge list CLIP uses; the header line is skipped
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [a + "</w>" for a in alphabet] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    # OWL checkpoints pad with "!" (id 0); the model treats a query starting with id 0 as padding
    pairs = [tuple(m.split()) for m in merges]
    return CLIPTokenizer(vocab=vocab, merges=pairs, pad_token="!", model_max_length=max_length)


def _tower_configs(text_len: int) -> tuple[dict, dict]:
    text = dict(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=text_len,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH_SIZE,
    )
    return text, vision


def _tame_heads(model) -> None:
    """Shrink the random heads' last layers so outputs look like a trained model's: boxes near
    their patch's grid position with some spread (instead of saturated at 0 or 1) and class
    scores spread over (0, 1). Tests need unsaturated values to tell right from wrong."""
    import torch

    heads = [model.box_head.dense2, model.class_head.logit_shift, model.class_head.logit_scale]
    if hasattr(model, "objectness_head"):
        heads.append(model.objectness_head.dense2)
    with torch.no_grad():
        for layer in heads:
            layer.weight.mul_(0.005)
            layer.bias.zero_()
        model.class_head.logit_scale.bias.fill_(3.0)  # scale = elu(3) + 1 = 4: logits of a few units


def make_owl(kind: str, out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random OWL model of `kind` ("owlvit" or "owlv2") to `out_dir`."""
    import torch
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    text, vision = _tower_configs(TINY_TEXT_LEN)
    size = {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    torch.manual_seed(seed)
    if kind == "owlv2":
        model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32))
        processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size=size), tokenizer=clip_tokenizer())
    elif kind == "owlvit":
        model = OwlViTForObjectDetection(OwlViTConfig(text_config=text, vision_config=vision, projection_dim=32))
        processor = OwlViTProcessor(
            image_processor=OwlViTImageProcessor(size=size, crop_size=size), tokenizer=clip_tokenizer()
        )
    else:
        raise ValueError(f"unknown kind {kind!r}: use owlvit or owlv2")
    _tame_heads(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # safetensors by default
    processor.save_pretrained(out_dir)
    return out_dir


def make_clip(out_dir: Path, seed: int = 0, projection_dim: int = 32, image_size: int = 64) -> Path:
    """Save a tiny random CLIP (transformers CLIPModel + CLIPProcessor) to `out_dir`.

    `projection_dim=512` gives the joint-space width of OpenAI ViT-B/32 (what YOLO-World's
    text input expects)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    text, vision = _tower_configs(77)  # CLIP text context is 77 tokens
    vision.update(image_size=image_size)
    torch.manual_seed(seed)
    # logit scale 100 as in the OpenAI checkpoints (ln 100 = 4.6052)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim, logit_scale_init_value=4.6052)
    model = CLIPModel(config)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}),
        tokenizer=clip_tokenizer(max_length=77),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def make_sam(kind: str, out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random masker of `kind` ("sam2": Sam2Model, 128 px input, 32 x 32 mask
    logits; "sam": SamModel, 64 px input) with its processor sized to match, to `out_dir`."""
    import torch
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2Processor,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    torch.manual_seed(seed)
    decoder = dict(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=32)
    if kind == "sam2":
        side = 128
        # one global-attention block, not first in its stage (first blocks pool their queries)
        backbone = Sam2HieraDetConfig(hidden_size=12, image_size=side, blocks_per_stage=[1, 1, 2, 1],
                                      embed_dim_per_stage=[12, 24, 48, 96], num_attention_heads_per_stage=[1, 1, 1, 1],
                                      global_attention_blocks=[3])
        vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[96, 48, 24, 12],
                                  backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32)
        model = Sam2Model(Sam2Config(
            vision_config=vision, image_size=side, mask_decoder_config=Sam2MaskDecoderConfig(**decoder),
            prompt_encoder_config=Sam2PromptEncoderConfig(image_size=side, patch_size=16, mask_input_channels=8, hidden_size=32),
            memory_attention_hidden_size=12, memory_encoder_hidden_size=32, mask_downsampler_embed_dim=32,
            memory_fuser_embed_dim=32, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=32))
        processor = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": side, "width": side},
                                                                     mask_size={"height": 32, "width": 32}), target_size=side)
    elif kind == "sam":
        side = 64
        vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=side, patch_size=8,
                                 output_channels=32, window_size=4, global_attn_indexes=[1], mlp_dim=64, num_pos_feats=16)
        model = SamModel(SamConfig(
            vision_config=vision, mask_decoder_config=SamMaskDecoderConfig(**decoder),
            prompt_encoder_config=SamPromptEncoderConfig(image_size=side, patch_size=8, hidden_size=32, mask_input_channels=4)))
        processor = SamProcessor(image_processor=SamImageProcessor(
            size={"longest_edge": side}, pad_size={"height": side, "width": side}, mask_size={"longest_edge": 16},
            mask_pad_size={"height": 16, "width": 16}))
    else:
        raise ValueError(f"unknown kind {kind!r}: use sam2 or sam")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


# ultralytics YOLOv8 at 1/16 of the n width (8-channel stems) and one block per stage:
# milliseconds per image on a CPU, but every layer type of the real network
TINY_YOLO_SCALE = [0.33, 0.0625, 256]  # depth, width, max channels (ultralytics' `scales` entry)


# SAM 3 at its smallest (see DESIGN.md): every part 32 wide, 112 px input (8 x 8 patches of 14),
# 20 queries; the processor pads prompts to 32 tokens, so the text tower takes 32 positions
SAM3_TINY = dict(
    vision_config=dict(backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=2, image_size=112, patch_size=14,
                                            window_size=4, global_attn_indexes=[1], pretrain_image_size=112),
                       backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32),
    text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     max_position_embeddings=32, projection_dim=32),
    geometry_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
    detr_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
    detr_decoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64, num_queries=20),
    mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
)


def make_sam3(out_dir: Path, seed: int = 0, image_size: int = 112) -> Path:
    """Save a tiny random SAM 3 (transformers Sam3Model + Sam3Processor) to `out_dir`; its
    scoring and presence heads are scaled so that scores spread over (0, 1)."""
    import copy

    import torch
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    torch.manual_seed(seed)
    model = Sam3Model(Sam3Config(**copy.deepcopy(SAM3_TINY))).eval()
    with torch.no_grad():  # random heads give logits near 0 (every score 0.25): spread them
        model.dot_product_scoring.query_proj.weight.mul_(40.0)
        model.detr_decoder.presence_head.layer3.weight.mul_(40.0)
        model.mask_decoder.mask_embedder.layers[-1].weight.mul_(1e4)  # mask logits of a few units
    side = image_size // 14 * 4  # the finest FPN level: 4x the patch grid
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(size={"height": image_size, "width": image_size},
                                                                 mask_size={"height": side, "width": side}),
                              tokenizer=clip_tokenizer(32))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def _tiny_ultralytics_yaml(template: str, out_dir: Path) -> Path:
    """ultralytics' model YAML `template` (e.g. "yolov8.yaml") with only a tiny "n" scale,
    written as <stem>n-tiny.yaml (ultralytics reads the scale letter from the file name)."""
    import yaml
    from ultralytics.utils.checks import check_yaml

    spec = yaml.safe_load(Path(check_yaml(template)).read_text())
    spec["scales"] = {"n": TINY_YOLO_SCALE}
    path = out_dir / f"{Path(template).stem.replace('yolov8', 'yolov8n')}-tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def make_yolo(path: Path, world: bool = False, seed: int = 0) -> Path:
    """Save a tiny random ultralytics YOLOv8 (or YOLOv8-Worldv2 with `world`) to `path` (.pt).

    Built from ultralytics' own YAML at `TINY_YOLO_SCALE` and saved with `Model.save`, as
    ultralytics saves checkpoints; ovdet loads it through `find_yolo_weights` /
    `load_yolo_model` like a release asset. YOLO-World keeps its 512-d text input (the width
    of CLIP ViT-B/32's embeddings): pair it with `make_clip(..., projection_dim=512)`."""
    import tempfile

    import torch

    from ovdet.backends.yolo import ultralytics_offline

    ultralytics_offline()  # no downloads, no telemetry, no pip installs from ultralytics
    from ultralytics import YOLO, YOLOWorld

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        spec = _tiny_ultralytics_yaml("yolov8-worldv2.yaml" if world else "yolov8.yaml", Path(tmp))
        torch.manual_seed(seed)
        model = (YOLOWorld if world else YOLO)(str(spec), verbose=False)
        _tame_yolo_head(model.model.model[-1])
        model.save(str(path))
    return path


def _tame_yolo_head(head) -> None:
    """Raise the class-score biases from ultralytics' initial -10 (a prior for training: every
    score ~1e-5, below any threshold) to -1.5, so a random tiny model's scores spread around
    0.2 and its boxes survive the presets' thresholds: the point of trying it offline."""
    import torch

    with torch.no_grad():
        if hasattr(head, "cv4"):  # WorldDetect: contrastive heads with a learned bias each
            for contrastive in head.cv4:
                contrastive.bias.fill_(-1.5)
        else:  # Detect: the last convolution of each class branch
            for branch in head.cv3:
                branch[-1].bias.fill_(-1.5)


def write_composite_configs(out: Path) -> dict[str, Path]:
    """YAML configs of the composite presets over the tiny checkpoints in `out` (absolute paths)."""
    out = Path(out).resolve()
    configs = {
        "clip-owlv2-proposals": {"base": "clip-b32-owlv2-proposals", "weights": out / "clip",
                                 "proposer_weights": out / "owlv2"},
        "clip-yolo-proposals": {"base": "clip-b16-yolo-proposals", "weights": out / "clip",
                                "proposer_weights": out / "yolo.pt"},
        "yolo-world": {"base": "yolo-world-s", "weights": out / "yolo-world.pt", "text_weights": out / "clip512"},
    }
    written = {}
    for name, keys in configs.items():
        lines = ["# tiny random checkpoints (tools/make_tiny_models.py): the real code path, meaningless boxes"]
        lines += [f"{key}: {value}" for key, value in keys.items()]
        written[name] = out / f"{name}.yaml"
        written[name].write_text("\n".join(lines) + "\n")
    return written


def preset_layout(out: Path) -> dict[str, Path]:
    """{path under weights/: tiny checkpoint} for every shipped preset, where ovdet's weights
    lookup looks for it: weights/<preset>/ for transformers checkpoints (CLIP presets get the
    512-d CLIP, which YOLO-World's text tower needs too; masker presets the tiny SAM 2 / SAM),
    weights/<file>.pt for ultralytics."""
    from ovdet.backends.sam_masker import PRESETS as MASKERS
    from ovdet.config import load_config, preset_names

    layout: dict[str, Path] = {name: out / ("sam2" if name.startswith("sam2") else "sam") for name in MASKERS}
    layout = {name: path for name, path in layout.items() if path.is_dir()}  # written by make_sam
    for name in preset_names():
        cfg = load_config(name)
        for weights in (cfg.weights, cfg.proposer_weights, cfg.text_weights):
            if not weights:
                continue
            if weights.endswith(".pt"):
                layout[weights] = out / ("yolo-world.pt" if "world" in weights else "yolo.pt")
        family = {"owl": "owlv2" if "owlv2" in cfg.weights else "owlvit", "clip": "clip512", "sam3": "sam3"}.get(cfg.backend)
        if family is not None:
            layout[name] = out / family
    return layout


def link_presets(out: Path, weights_dir: Path) -> list[Path]:
    """Lay out `preset_layout(out)` under `weights_dir` as symbolic links (copies where links
    are not allowed); returns the entries written."""
    import shutil

    done = []
    for rel, target in preset_layout(out).items():
        dest = weights_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.is_dir():
            shutil.rmtree(dest)
        try:
            dest.symlink_to(target.resolve(), target_is_directory=target.is_dir())
        except OSError:
            (shutil.copytree if target.is_dir() else shutil.copy2)(target, dest)
        done.append(dest)
    return done


# -- Grounding DINO, MM-Grounding-DINO and OmDet-Turbo (issue 25) ------------------------------
# Grounding DINO hard-codes the BERT-base ids of [CLS], [SEP], "." and "?" (101, 102, 1012, 1029)
# as phrase delimiters, so an offline vocabulary must put them at those ids.
BERT_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}


def bert_tokenizer(words=(), vocab_size: int = 1100):
    """A BertTokenizerFast (uncased) over an offline vocabulary: the special tokens at BERT-base's
    ids, ASCII letters, digits and punctuation as tokens and `##` continuations (any lowercase
    word tokenises), plus `words` as whole tokens (a benchmark gives its class names' words so
    they tokenise about as compactly as with the real BERT vocabulary)."""
    from transformers import BertTokenizerFast

    pieces = list("abcdefghijklmnopqrstuvwxyz0123456789,-'()/&!+:;")
    tokens = pieces + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tokens += sorted({w.lower() for w in words} - set(tokens) - set(BERT_SPECIAL_IDS))
    vocab = [f"[unused{i}]" for i in range(max(vocab_size, len(tokens) + 1100))]
    for tok, i in BERT_SPECIAL_IDS.items():
        vocab[i] = tok
    free = (i for i in range(len(vocab)) if vocab[i].startswith("[unused") and i > 103)
    for tok in tokens:
        vocab[next(free)] = tok
    return BertTokenizerFast(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)


def grounding_dino_config(mm: bool = False, max_text_len: int = 256, tiny: bool = True, vocab_size: int = 1100):
    """A (MM-)Grounding-DINO config: tiny (Swin embed_dim 8, depths [1,1,1,1], BERT hidden 8,
    d_model 32, 2+2 layers, 20 queries) or, with `tiny=False`, the Swin-T / BERT-base /
    900-query architecture of the published -T checkpoints."""
    from transformers import GroundingDinoConfig, MMGroundingDinoConfig

    cls = MMGroundingDinoConfig if mm else GroundingDinoConfig
    if not tiny:
        backbone = dict(model_type="swin", embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                        window_size=7, out_indices=[2, 3, 4])
        text = dict(model_type="bert", vocab_size=vocab_size)
        return cls(backbone_config=backbone, text_config=text, max_text_len=max_text_len)
    backbone = dict(model_type="swin", embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=7,
                    image_size=224, out_indices=[2, 3, 4])
    text = dict(model_type="bert", vocab_size=vocab_size, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=16, max_position_embeddings=max_text_len)
    return cls(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=2, decoder_layers=2,
               encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
               num_queries=20, max_text_len=max_text_len, num_feature_levels=4, encoder_n_points=2,
               decoder_n_points=2)


def make_grounding_dino(out_dir: Path, mm: bool = False, seed: int = 0, max_text_len: int = 256,
                        shortest_edge: int = 64, longest_edge: int = 96) -> Path:
    """Save a tiny random GroundingDinoForObjectDetection (MMGroundingDino with `mm`) and its
    processor (offline BERT tokenizer, images resized to `shortest_edge`/`longest_edge`)."""
    import torch
    from transformers import (GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor,
                              MMGroundingDinoForObjectDetection)

    torch.manual_seed(seed)
    config = grounding_dino_config(mm=mm, max_text_len=max_text_len)
    model = (MMGroundingDinoForObjectDetection if mm else GroundingDinoForObjectDetection)(config).eval()
    with torch.no_grad():  # MM-GDINO's contrastive heads start at a -4.6 bias (1 % scores): spread them
        for name, param in model.named_parameters():
            if "class_embed" in name and name.endswith("bias"):
                param.zero_()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": shortest_edge, "longest_edge": longest_edge}),
        tokenizer=bert_tokenizer())
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def omdet_turbo_config(tiny: bool = True):
    """An OmDet-Turbo config: tiny (HF Swin embed_dim 8, CLIP text hidden 48, d_model 32, 20
    queries) or, with `tiny=False`, the Swin-T / CLIP-B text / 900-query architecture of
    omlab/omdet-turbo-swin-tiny-hf (HF Swin instead of timm: same network)."""
    from transformers import OmDetTurboConfig

    if not tiny:
        backbone = dict(model_type="swin", embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                        window_size=7, image_size=640, out_indices=[2, 3, 4])
        text = dict(model_type="clip_text_model", hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                    num_attention_heads=8, max_position_embeddings=77)
        return OmDetTurboConfig(backbone_config=backbone, text_config=text, use_timm_backbone=False,
                                apply_layernorm_after_vision_backbone=False)
    backbone = dict(model_type="swin", embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=7,
                    image_size=224, out_indices=[2, 3, 4])
    # class_embed_dim (= the text width) must differ from decoder_hidden_dim: transformers 5.24
    # creates the task projection only then, and its forward needs it
    text = dict(model_type="clip_text_model", hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=77)
    return OmDetTurboConfig(
        backbone_config=backbone, text_config=text, use_timm_backbone=False, image_size=64,
        apply_layernorm_after_vision_backbone=False,  # HF Swin normalises its own outputs (timm's do not)
        encoder_in_channels=[16, 32, 64], vision_features_channels=[32, 32, 32], encoder_hidden_dim=32,
        encoder_dim_feedforward=32, encoder_attention_heads=2, decoder_hidden_dim=32, decoder_num_heads=2,
        decoder_num_layers=2, decoder_dim_feedforward=32, text_projection_in_dim=48, text_projection_out_dim=48,
        class_embed_dim=48, task_encoder_hidden_dim=32, num_queries=20)


def make_omdet_turbo(out_dir: Path, seed: int = 0, image_size: int = 64) -> Path:
    """Save a tiny random OmDetTurboForObjectDetection with its processor (the real CLIP BPE
    tokenizer from open_clip's vocabulary file, images resized to `image_size` square)."""
    import torch
    from transformers import DetrImageProcessor, OmDetTurboForObjectDetection, OmDetTurboProcessor

    torch.manual_seed(seed)
    model = OmDetTurboForObjectDetection(omdet_turbo_config()).eval()
    image_processor = DetrImageProcessor(size={"height": image_size, "width": image_size}, do_pad=False,
                                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    processor = OmDetTurboProcessor(image_processor=image_processor, tokenizer=clip_tokenizer(max_length=77))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the tiny checkpoints, configs and weights/ into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars for files of a few hundred KB
    for kind in ("owlvit", "owlv2"):
        print(f"wrote {make_owl(kind, args.out / kind, seed=args.seed)}")
    print(f"wrote {make_clip(args.out / 'clip', seed=args.seed)}")
    print(f"wrote {make_clip(args.out / 'clip512', seed=args.seed, projection_dim=512)}")
    print(f"wrote {make_sam3(args.out / 'sam3', seed=args.seed)}")
    for kind in ("sam2", "sam"):
        print(f"wrote {make_sam(kind, args.out / kind, seed=args.seed)}")
    print(f"wrote {make_yolo(args.out / 'yolo.pt', seed=args.seed)}")
    print(f"wrote {make_yolo(args.out / 'yolo-world.pt', world=True, seed=args.seed)}")
    for path in write_composite_configs(args.out).values():
        print(f"wrote {path}")
    linked = link_presets(args.out, args.out / "weights")
    print(f"wrote {args.out / 'weights'}/ ({len(linked)} presets and files): OVDET_WEIGHTS={args.out / 'weights'} "
          "makes the preset names load the tiny checkpoints")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
