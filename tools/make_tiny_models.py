#!/usr/bin/env python
"""Write tiny, randomly initialised OWL-ViT and OWLv2 checkpoints for offline trials and tests.

    python tools/make_tiny_models.py /tmp/tiny
    ovdet detect examples/chelsea.jpg --classes "cat,dog" --model /tmp/tiny/owlv2
    ovdet classify examples/chelsea.jpg --classes "cat,dog" --model /tmp/tiny/clip

Each folder is a real transformers checkpoint (config.json, model.safetensors, tokenizer and
image-processor files) written by `save_pretrained`, so ovdet loads it through exactly the code
path used for hub checkpoints. The tokenizer is the real CLIP BPE (49,408 tokens), built from
the vocabulary file that the open_clip_torch wheel ships; only the network weights are random,
so detections are meaningless but shapes, boxes and bookkeeping are real.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write owlvit/, owlv2/ and clip/ into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for kind in ("owlvit", "owlv2"):
        print(f"wrote {make_owl(kind, args.out / kind, seed=args.seed)}")
    print(f"wrote {make_clip(args.out / 'clip', seed=args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
