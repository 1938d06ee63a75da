"""OWLv2's preprocessing, resized first and padded after, in bounded memory.

`Owlv2ImageProcessor` rescales an image to float, pads it at the bottom and right to a square
of side S = max(h, w) with zeros, blurs that square with a Gaussian of sigma = (S / T - 1) / 2
(kernel 2 ceil(3 sigma) + 1, reflect-101 border), resizes it bilinearly to T x T (960 for
OWLv2 B/16) and normalises it. For a 20000 x 20000 image that is two 4.8 GB float copies and a
61-tap blur of 400 M pixels, almost all of which the bilinear sampling then throws away.

Every step before the normalisation is linear and acts on rows and columns separately:
out = A_y X A_x^T per channel, where A (T x length) folds the zero padding, the blur and the
bilinear sampling of one axis together. Output row i needs only the ~2 ceil(3 sigma) + 2 input
rows around the point it samples, so A is a band: `AxisWeights`. `Owlv2Resizer` applies it to
the uint8 image one band of output rows at a time (rows through a dense slice of A_y, then
columns through A_x as a sparse matrix): the blur is computed only where it is sampled, the
padding is never materialised (outputs past the image are the pad value), and the only
full-resolution data is the caller's uint8 array. Float temporaries stay under ~64 MB.

Equal to the stock processor up to float rounding (the same kernel, reflection and sampling
positions; only the summation order differs): max |difference| of the normalised pixel values
measured by tests/test_owlv2_resize.py is below 2e-5 (values span about -1.8..2.1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

# bound on a band's float32 temporary (input rows x column chunk): keeps memory flat for any
# image size, and the chunk in cache
CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True, eq=False)  # hashed by identity: built once per size (lru_cache)
class AxisWeights:
    """One axis of OWLv2's pad + blur + bilinear resize as a band matrix.

    out[i] = sum_k weights[i, k] * x[start[i] + k] for the `length` input samples of the image
    (taps that land in the padding contribute 0 and are left out).
    start: (T,) int64; weights: (T, K) float32; rows: outputs with any tap (the rest are padding).
    """

    start: np.ndarray
    weights: np.ndarray
    length: int
    rows: int
    side: int

    def span(self, i0: int, i1: int) -> tuple[int, int]:
        """Input range [lo, hi) that outputs [i0, i1) read."""
        k = self.weights.shape[1]
        return int(self.start[i0:i1].min()), min(self.length, int(self.start[i0:i1].max()) + k)

    def dense(self, i0: int, i1: int, lo: int, hi: int) -> torch.Tensor:
        """(i1 - i0, hi - lo) float32: rows i0..i1 of A restricted to input columns lo..hi."""
        k = self.weights.shape[1]
        out = np.zeros((i1 - i0, hi - lo + k), dtype=np.float32)
        cols = self.start[i0:i1, None] - lo + np.arange(k)
        np.add.at(out, (np.arange(i1 - i0)[:, None], cols), self.weights[i0:i1])
        return torch.from_numpy(out[:, : hi - lo])

    def sparse(self) -> torch.Tensor:
        """The whole (T, length) matrix as sparse CSR (for the column pass)."""
        t, k = self.weights.shape
        cols = self.start[:, None] + np.arange(k)
        keep = (self.weights != 0) & (cols < self.length)
        rows = np.broadcast_to(np.arange(t)[:, None], (t, k))[keep]
        coo = torch.sparse_coo_tensor(np.stack([rows, cols[keep]]), self.weights[keep], (t, self.length),
                                      check_invariants=False)
        with warnings.catch_warnings():  # "CSR support is in beta": matmul by it is all we use
            warnings.simplefilter("ignore", UserWarning)
            return coo.coalesce().to_sparse_csr()


def _gaussian_kernel1d(size: int, sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian torchvision's `gaussian_blur` builds (float32)."""
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).numpy()


def _reflect101(index: np.ndarray, side: int) -> np.ndarray:
    """Indices reflected into [0, side) without repeating the edge (torch's "reflect")."""
    if side == 1:
        return np.zeros_like(index)
    period = 2 * (side - 1)
    m = np.mod(index, period)
    return np.where(m >= side, period - m, m)


@lru_cache(maxsize=64)  # video frames and tiles repeat sizes: build each axis once
def axis_weights(length: int, side: int, out: int, sigma: float) -> AxisWeights:
    """The band matrix of one axis.

    Args:
        length: the image's pixels along this axis (the rest of `side` is zero padding).
        side: the padded square's side S.
        out: the output size T.
        sigma: the Gaussian's sigma (0 = no blur), as the processor computes it.
    """
    # torch's bilinear sampling (align_corners=False, no antialias), in float32 like the kernel
    scale = np.float32(side) / np.float32(out)
    src = np.maximum((np.arange(out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    i0 = src.astype(np.int64)
    lam = (src - i0).astype(np.float32)
    i1 = np.where(i0 < side - 1, i0 + 1, i0)
    taps = np.stack([i0, i1], 1)  # (T, 2)
    tap_w = np.stack([1 - lam, lam], 1).astype(np.float64)
    if sigma > 0:  # each bilinear tap reads a blurred sample: the Gaussian around it
        size = 2 * math.ceil(3 * sigma) + 1
        kernel = _gaussian_kernel1d(size, sigma).astype(np.float64)
        offsets = np.arange(size) - size // 2
        taps = _reflect101(taps[:, :, None] + offsets, side).reshape(out, -1)
        tap_w = (tap_w[:, :, None] * kernel).reshape(out, -1)
    inside = taps < length  # taps in the padding read zeros
    has = inside.any(1)
    start = np.where(has, np.where(inside, taps, np.iinfo(np.int64).max).min(1), 0)
    width = int((np.where(inside, taps, 0) - start[:, None]).max(initial=0)) + 1
    weights = np.zeros((out, width), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out)[:, None], taps.shape)
    np.add.at(weights, (rows[inside], (taps - start[:, None])[inside]), tap_w[inside])
    last = int(np.nonzero(has)[0].max()) + 1 if has.any() else 0
    return AxisWeights(start=start, weights=weights.astype(np.float32), length=length, rows=last, side=side)


def output_size(image_processor) -> tuple[int, int] | None:
    """(height, width) an image processor resizes to, when it names both (a dict or
    transformers' SizeDict); None otherwise (e.g. shortest-edge resizing)."""
    size = getattr(image_processor, "size", None)
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    h, w = get("height"), get("width")
    return (int(h), int(w)) if h and w else None


class Owlv2Resizer:
    """`Owlv2ImageProcessor`'s pixel values for uint8 RGB arrays, resize first, pad after.

    Built from a processor's settings (`supports` says whether it can be); `__call__` returns
    what the processor returns for the same images, (B, 3, T, T) float32.
    """

    def __init__(self, image_processor):
        ip = image_processor
        self.height, self.width = output_size(ip)
        self.scale = float(ip.rescale_factor) if ip.do_rescale else 1.0
        mean = ip.image_mean if ip.do_normalize else (0.0, 0.0, 0.0)
        std = ip.image_std if ip.do_normalize else (1.0, 1.0, 1.0)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    @staticmethod
    def supports(image_processor) -> bool:
        """The stock OWLv2 processor with its own pipeline (pad to a square, resize with
        anti-aliasing); anything else keeps the processor's own code."""
        from transformers import Owlv2ImageProcessor

        ip = image_processor
        return (isinstance(ip, Owlv2ImageProcessor) and bool(getattr(ip, "do_pad", False))
                and bool(getattr(ip, "do_resize", False)) and output_size(ip) is not None)

    def sigmas(self, side: int) -> tuple[float, float]:
        """The processor's rule: sigma = (S / T - 1) / 2 per axis, clamped at 0, in float32;
        no blur at all when either sigma is 0."""
        factors = torch.tensor([side, side], dtype=torch.float32) / torch.tensor([self.height, self.width])
        sigma = ((factors - 1) / 2).clamp(min=0)
        return (0.0, 0.0) if bool(torch.any(sigma == 0)) else (float(sigma[0]), float(sigma[1]))

    def __call__(self, images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
        """RGB uint8 (H, W, 3) arrays -> (B, 3, T, T) normalised float32 pixel values on `device`."""
        out = torch.empty(len(images), 3, self.height, self.width, dtype=torch.float32)
        for b, image in enumerate(images):
            out[b] = self.resize(image)
        out.sub_(self.mean / self.scale).div_(self.std / self.scale)  # == (x * scale - mean) / std
        return out.to(device)

    def resize(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, T, T) float32 in the image's own units (0..255), padding 0."""
        h, w = image.shape[:2]
        side = max(h, w)
        sy, sx = self.sigmas(side)
        ay = axis_weights(h, side, self.height, sy)
        ax = axis_weights(w, side, self.width, sx)
        return resample(image, ay, ax)


def resample(image: np.ndarray, ay: AxisWeights, ax: AxisWeights) -> torch.Tensor:
    """(H, W, 3) uint8 (C-contiguous, or it is copied) -> (3, Ty, Tx) float32 = A_y X A_x^T per channel, in the
    image's units (0..255), computed in bands of output rows (Ctrl-C is seen between bands;
    float temporaries stay under ~3 x CHUNK_BYTES)."""
    h, w = image.shape[:2]
    out = torch.zeros(3, len(ay.start), len(ax.start), dtype=torch.float32)
    if ay.rows == 0 or ax.rows == 0:
        return out
    # rows pass in bands of output rows through a dense slice of A_y, which reads
    # band * S/T + K input rows where K would do: at most 4 K (or 64) rows per band, so
    # multiply-adds stay within 4x of the useful ones and small images take few calls.
    # The columns pass (sparse) runs once per group of bands, ~CHUNK_BYTES of rows.
    k = ay.weights.shape[1]
    band = max(1, int((max(4 * k, 64) - k) * len(ay.start) / ay.side))
    group = max(band, min(ay.rows, CHUNK_BYTES // (12 * w) // band * band))
    # buffers allocated once per image: fresh allocations of this size cost more in page
    # faults than the conversions that fill them
    mixed = torch.empty(group, w * 3, dtype=torch.float32)
    regrouped = torch.empty(w, group * 3, dtype=torch.float32)
    scratch = torch.empty(CHUNK_BYTES // 4, dtype=torch.float32)
    columns = _sparse(ax)
    flat = image.reshape(h, w * 3)  # a view: rows of interleaved RGB
    # zero-copy when the array is writable (torch does not wrap read-only memory)
    source = torch.from_numpy(flat) if flat.flags.writeable else None
    for g0 in range(0, ay.rows, group):  # Python loops: Ctrl-C is seen between bands
        g1 = min(ay.rows, g0 + group)
        for i0 in range(g0, g1, band):
            i1 = min(g1, i0 + band)
            lo, hi = ay.span(i0, i1)
            rows = ay.dense(i0, i1, lo, hi)  # (n, hi - lo)
            chunk = max(3, scratch.numel() // (hi - lo) // 3 * 3)
            for c0 in range(0, w * 3, chunk):  # uint8 -> float a chunk of columns at a time
                c1 = min(w * 3, c0 + chunk)
                part = source[lo:hi, c0:c1] if source is not None else torch.from_numpy(np.array(flat[lo:hi, c0:c1]))
                floats = scratch[: (hi - lo) * (c1 - c0)].view(hi - lo, c1 - c0)
                floats.copy_(part)
                torch.mm(rows, floats, out=mixed[i0 - g0 : i1 - g0, c0:c1])
        n = g1 - g0
        cols = regrouped[:, : n * 3]
        cols.view(w, n, 3).copy_(mixed[:n].view(n, w, 3).permute(1, 0, 2))
        res = torch.sparse.mm(columns, cols)  # (Tw, n * 3)
        out[:, g0:g1, :] = res.view(len(ax.start), n, 3).permute(2, 1, 0)
    return out


def reduce_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (H, W, 3) uint8 image brought down to at most `height` x `width` per axis (Gaussian
    anti-aliasing with OWLv2's sigma rule, bilinear sampling), in bounded memory; unchanged
    when already small enough. For processors that would otherwise convert the whole image
    to float (OWL-ViT's bicubic resize)."""
    h, w = image.shape[:2]
    th, tw = min(h, height), min(w, width)
    if (th, tw) == (h, w):
        return image
    ay = axis_weights(h, h, th, max(0.0, (h / th - 1) / 2))
    ax = axis_weights(w, w, tw, max(0.0, (w / tw - 1) / 2))
    out = resample(image, ay, ax)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


@lru_cache(maxsize=64)
def _sparse(weights: AxisWeights) -> torch.Tensor:
    return weights.sparse()
