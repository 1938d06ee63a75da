"""`tools/bench.py --only masks`: SAM 2 masks for 50 boxes on a 1280x720 photo, full-size
architectures (hiera-tiny and hiera-large configs, random weights), one process, interleaved:

  ovdet    one image embedding, the 50 boxes as ONE prompt batch (multimask_output=False), the
           upsampling only where masks can be (`ovdet.backends.sam_masker`);
  loop     what autodistill's grounded-SAM does with SAM's predictor: the same embedding, then
           one mask-decoder call per box (multimask_output=True, the best-scoring of the three
           kept) and the processor's `post_process_masks` to the full image per box.

Reported: seconds of the image encoder, and of each prompt side split into decoder and
upsampling, and the ratio loop / ovdet on the prompt side.
"""

from __future__ import annotations

import numpy as np
import torch

# the public checkpoints' backbone settings (facebook/sam2.1-hiera-tiny, -large)
HIERA = {
    "hiera-tiny": dict(hidden_size=96, blocks_per_stage=[1, 2, 7, 2], embed_dim_per_stage=[96, 192, 384, 768],
                       num_attention_heads_per_stage=[1, 2, 4, 8], global_attention_blocks=[5, 7, 9],
                       window_size_per_stage=[8, 4, 14, 7]),
    "hiera-large": dict(hidden_size=144, blocks_per_stage=[2, 6, 36, 4], embed_dim_per_stage=[144, 288, 576, 1152],
                        num_attention_heads_per_stage=[2, 4, 8, 16], global_attention_blocks=[23, 33, 43],
                        window_size_per_stage=[8, 4, 16, 8]),
}
N_BOXES = 50


def full_size_sam2(name: str):
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2Model, Sam2Processor, Sam2VisionConfig

    backbone = Sam2HieraDetConfig(**HIERA[name])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=list(reversed(HIERA[name]["embed_dim_per_stage"])))
    torch.manual_seed(0)
    model = Sam2Model(Sam2Config(vision_config=vision)).eval()
    from transformers import Sam2ImageProcessor

    return model, Sam2Processor(image_processor=Sam2ImageProcessor())


def boxes_on(image: np.ndarray, n: int = N_BOXES) -> np.ndarray:
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    xy = rng.uniform([0, 0], [w * 0.8, h * 0.8], (n, 2))
    return np.concatenate([xy, xy + rng.uniform(30, 250, (n, 2))], 1).clip(0, [w, h, w, h]).astype(np.float32)


def bench_masks(args, work) -> dict:
    from ovdet.backends.sam_masker import SamMasker

    from bench import interleaved, test_image

    image = test_image(720, 1280)
    boxes = boxes_on(image)
    size = image.shape[:2]
    out: dict = {"boxes": N_BOXES, "image": "1280x720"}
    for name in HIERA:
        model, processor = full_size_sam2(name)
        masker = SamMasker(model, processor, torch.device(args.device))
        encoded = masker.encode(image)
        logits = masker.low_res(encoded, boxes, size)

        def loop_decode():
            best = []
            with torch.inference_mode():
                for box in boxes:
                    scaled = processor(original_sizes=[list(size)], input_boxes=[[box.tolist()]], return_tensors="pt")
                    res = model(image_embeddings=encoded.embeddings, input_boxes=scaled["input_boxes"], multimask_output=True)
                    k = int(res.iou_scores[0, 0].argmax())
                    best.append(res.pred_masks[0, 0, k])
            return best

        loop_logits = loop_decode()

        def loop_upsample():
            return [processor.post_process_masks([m[None, None]], [size])[0] for m in loop_logits]

        secs = interleaved({
            "image_encoder": lambda: masker.encode(image),
            "ovdet_decoder": lambda: masker.low_res(encoded, boxes, size),
            "ovdet_upsample": lambda: masker.upsample(logits, encoded, size),
            "loop_decoder": loop_decode,
            "loop_upsample": loop_upsample,
        }, args.reps, args.device)
        ovdet = secs["ovdet_decoder"] + secs["ovdet_upsample"]
        loop = secs["loop_decoder"] + secs["loop_upsample"]
        for key, value in secs.items():
            out[f"{name}_{key}_s"] = value
        out[f"{name}_prompt_side_loop_over_ovdet"] = loop / ovdet
        out[f"{name}_decoder_loop_over_ovdet"] = secs["loop_decoder"] / secs["ovdet_decoder"]
        out[f"{name}_whole_loop_over_ovdet"] = (loop + secs["image_encoder"]) / (ovdet + secs["image_encoder"])
    return out
