"""SAM 3's masks, made only for the detections kept.

Scoring a vocabulary of C prompts gives C x Q candidate queries per image. Their mask logits
would be C x Q x 288 x 288 floats (5 GB for 80 classes at 1008 px), and full-size masks
C x Q x H x W: neither is made. `Sam3Masks` keeps, per prompt, what the mask decoder reads
(the DETR encoder's output, the prompt tokens, the decoder's queries); `select` runs the mask
decoder for the prompts of the kept detections only, on their queries only, and upsamples each
low-resolution mask over the window where it can be positive.

The result equals `Sam3Processor.post_process_instance_segmentation` (sigmoid, bilinear resize
to the image with align_corners=False, > 0.5): `bilinear_window` computes the same weights as
torch's bilinear interpolation, for a window of output pixels instead of the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..instance_masks import Masks

MASK_THRESHOLD = 0.5  # post_process_instance_segmentation's mask_threshold (on the probability)


def source_index(in_size: int, out_size: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For output pixels start..stop-1 of a bilinear resize in_size -> out_size (align_corners
    False, as torch computes it in float32): (i0, i1) (n,) int64 source indices and (n,) float32
    weight of i1 (that of i0 is 1 - it)."""
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    dst = torch.arange(start, stop, dtype=torch.float32)
    src = ((dst + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.to(torch.int64).clamp_max(in_size - 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, src - i0.to(torch.float32)


def bilinear_window(probs: torch.Tensor, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """Rows rows[0]..rows[1]-1 and columns cols[0]..cols[1]-1 of `probs` ((h, w) float32)
    resized bilinearly to `size` = (H, W): a (rows, cols) float32 window of the full result."""
    (h, w), (height, width) = probs.shape, size
    x0, x1, lx = source_index(w, width, *cols)
    y0, y1, ly = source_index(h, height, *rows)
    lx, ly = lx.to(probs.device), ly.to(probs.device)
    across = probs[:, x0.to(probs.device)] * (1 - lx) + probs[:, x1.to(probs.device)] * lx  # (h, cols)
    return across[y0.to(probs.device)] * (1 - ly)[:, None] + across[y1.to(probs.device)] * ly[:, None]


def positive_window(probs: torch.Tensor, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The output rows and columns ((start, stop) each) outside which the resized `probs` cannot
    exceed the threshold: a bilinear value is a convex combination of its 4 source pixels, so
    only pixels with a source pixel above it can. None when no source pixel is above it."""
    above = probs > MASK_THRESHOLD
    if not bool(above.any()):
        return None
    spans = []
    for axis, out in ((1, size[0]), (0, size[1])):  # rows: any along columns; columns: along rows
        hit = torch.nonzero(above.any(dim=axis)).flatten()
        lo, hi = int(hit[0]), int(hit[-1])
        i0, i1, _ = source_index(probs.shape[1 - axis], out, 0, out)
        inside = torch.nonzero(((i0 >= lo) & (i0 <= hi)) | ((i1 >= lo) & (i1 <= hi))).flatten()
        spans.append((int(inside[0]), int(inside[-1]) + 1))
    return spans[0], spans[1]


def upsample_mask(logits: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """(h, w) mask logits -> (crop, (y, x)): the full-size mask's window that can be positive,
    as bool, and where it sits; memory follows the window, not the image."""
    probs = logits.float().sigmoid()
    window = positive_window(probs, size)
    if window is None:
        return np.zeros((0, 0), bool), (0, 0)
    rows, cols = window
    crop = bilinear_window(probs, size, rows, cols) > MASK_THRESHOLD
    return crop.cpu().numpy(), (rows[0], cols[0])


@dataclass
class PromptState:
    """What the mask decoder reads for a batch of B prompts on one image.

    encoder: (B, S, D) the DETR encoder's output; prompt: (B, L, D) prompt tokens and
    prompt_mask (B, L) bool; queries: (B, Q, D) the decoder's last hidden states."""

    encoder: torch.Tensor
    prompt: torch.Tensor
    prompt_mask: torch.Tensor | None
    queries: torch.Tensor


class Sam3Masks:
    """The masks of one image's R x Q candidates (row r * Q + q = query q of prompt r), made on
    `select` (the `CandidateMasks` protocol of `ovdet.backends.base`).

    decode: (backbone features (levels of (1, D, h, w)), PromptState of b prompts, (b, k, D)
    queries) -> (b, k, h0, w0) mask logits: the model's mask decoder.
    states: per chunk of prompts, its `PromptState` and first prompt row.
    chunk: prompts per mask-decoder call (a memory budget)."""

    def __init__(self, decode: Callable[[Any, PromptState, torch.Tensor], torch.Tensor], backbone: Sequence[torch.Tensor],
                 states: list[tuple[int, PromptState]], num_queries: int, chunk: int):
        self.decode, self.backbone, self.states = decode, backbone, states
        self.num_queries, self.chunk = num_queries, max(1, chunk)

    @torch.inference_mode()
    def select(self, rows: np.ndarray, image_size: tuple[int, int]) -> Masks:
        """Masks of candidates `rows` ((K,) int64) on an image of `image_size` = (H, W)."""
        rows = np.asarray(rows, np.int64)
        crops: list[np.ndarray] = [np.zeros((0, 0), bool)] * len(rows)
        origins = np.zeros((len(rows), 2), np.int64)
        prompts, queries = np.divmod(rows, self.num_queries)
        bounds = [start for start, _ in self.states[1:]] + [np.iinfo(np.int64).max]
        for (first, state), end in zip(self.states, bounds):
            wanted = sorted({p for p in prompts.tolist() if first <= p < end})
            for start in range(0, len(wanted), self.chunk):
                group = [p - first for p in wanted[start: start + self.chunk]]
                picks = [np.flatnonzero(prompts == p + first) for p in group]  # positions in `rows`
                width = max(len(p) for p in picks)
                # each prompt's kept queries, padded by repeating one (queries are independent)
                index = torch.tensor([queries[p].tolist() + [int(queries[p[0]])] * (width - len(p)) for p in picks],
                                     device=state.queries.device)
                sub = PromptState(state.encoder[group], state.prompt[group],
                                  None if state.prompt_mask is None else state.prompt_mask[group], state.queries[group])
                chosen = torch.gather(sub.queries, 1, index[..., None].expand(-1, -1, sub.queries.shape[-1]))
                logits = self.decode(self.backbone, sub, chosen)
                for b, positions in enumerate(picks):
                    for k, pos in enumerate(positions):
                        crops[pos], origins[pos] = upsample_mask(logits[b, k], image_size)
        return Masks.from_crops(crops, origins, image_size)
