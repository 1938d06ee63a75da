"""Image preprocessing of the OWL-ViT, OWLv2 and CLIP processors in numpy and OpenCV.

An export is run without torch, so the transformers image processors (torchvision kernels)
are replicated here step by step; tests compare the pixels with the processors' own.

- OWL-ViT and CLIP: an anti-aliased bicubic resize of the uint8 image to a square, then
  (x - 255 mean) / (255 std). On a CPU torchvision resizes uint8 images natively, with
  Pillow's separable filter and 16-bit fixed-point weights (PyTorch's `_upsample_bicubic2d_aa`
  on bytes); Pillow itself keeps 22-bit weights and differs by 1-2 levels (up to 11 when one
  axis is upsampled), so `resize_bicubic_aa` reimplements the fixed-point kernel.
- OWLv2: x / 255, zero padding at the bottom and right to a square, a Gaussian blur with
  sigma (scale - 1) / 2 (OpenCV's separable filter, reflect-101 border, as
  `ovdet.backends.owlv2_resize` does), a bilinear resize without anti-aliasing, normalise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _cubic_aa(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution with a = -0.5 (the anti-aliasing filter of Pillow and torch)."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _int16_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per output pixel: first input index (O,), fixed-point weights (O, K) int64, precision.

    The support widens with the downscale factor (that is the anti-aliasing); weights are
    normalised per pixel, then scaled by the largest power of two that keeps them in int16."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centres = scale * (np.arange(out_size) + 0.5)
    xmin = np.maximum((centres - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((centres + support + 0.5).astype(np.int64), in_size)
    width = int((xmax - xmin).max())
    taps = np.arange(width)
    w = _cubic_aa((xmin[:, None] + taps[None, :] - centres[:, None] + 0.5) * invscale)
    w = np.where(taps[None, :] < (xmax - xmin)[:, None], w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    w_max = float(w.max())
    precision = 0
    while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    v = w * (1 << precision)
    # C casts truncate toward zero: int(-0.5 + v) for negative v
    fixed = np.where(v < 0, np.trunc(-0.5 + v), np.trunc(0.5 + v)).astype(np.int64)
    return xmin, fixed, precision


def _resample_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One separable pass over `axis` of a uint8 (H, W, C) image, rounding back to uint8."""
    in_size = image.shape[axis]
    xmin, fixed, precision = _int16_weights(in_size, out_size)
    k = fixed.shape[1]
    idx = np.minimum(xmin[:, None] + np.arange(k)[None, :], in_size - 1)  # padded taps have weight 0
    src = np.moveaxis(image, axis, 0).astype(np.int64)  # (in, other, C)
    acc = np.full((out_size,) + src.shape[1:], 1 << (precision - 1), dtype=np.int64)
    for j in range(k):
        acc += src[idx[:, j]] * fixed[:, j].reshape((-1,) + (1,) * (src.ndim - 1))
    out = np.clip(acc >> precision, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def resize_bicubic_aa(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8, as torchvision's anti-aliased bicubic
    resize of a uint8 tensor on a CPU: horizontal pass first, then vertical."""
    out = image
    if width != image.shape[1]:
        out = _resample_axis(out, width, axis=1)
    if height != image.shape[0]:
        out = _resample_axis(out, height, axis=0)
    return out


def normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], scale: float = 1.0) -> np.ndarray:
    """(H, W, 3) values -> (3, H, W) float32 (x * scale - mean) / std, as the processors fuse
    it: (x - mean / scale) / (std / scale)."""
    m = (np.asarray(mean, np.float32) / np.float32(scale)).astype(np.float32)
    s = (np.asarray(std, np.float32) / np.float32(scale)).astype(np.float32)
    return np.ascontiguousarray(((pixels.astype(np.float32) - m) / s).transpose(2, 0, 1))


def square_resize_pixels(images: Sequence[np.ndarray], size: int, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> np.ndarray:
    """OWL-ViT's processor, and CLIP's without the centre crop: RGB uint8 (H, W, 3) images ->
    (B, 3, size, size) float32 (aspect ratio not kept)."""
    return np.stack([normalise(resize_bicubic_aa(im, size, size), mean, std, scale=1 / 255) for im in images])


def _gaussian_kernel1d(size: int, sigma: float) -> np.ndarray:
    half = (size - 1) * 0.5
    x = np.linspace(-half, half, num=size, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / np.float32(sigma)) ** 2).astype(np.float32)
    return kernel / kernel.sum()


def padded_square_pixels(images: Sequence[np.ndarray], size: int, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> np.ndarray:
    """OWLv2's processor: RGB uint8 (H, W, 3) images -> (B, 3, size, size) float32, each image
    padded with black at the bottom and right to a square of side max(H, W) first."""
    import cv2

    out = []
    for im in images:
        h, w = im.shape[:2]
        side = max(h, w)
        canvas = np.zeros((side, side, 3), np.float32)
        canvas[:h, :w] = im.astype(np.float32) * np.float32(1 / 255)
        sigma = max((side / size - 1) / 2, 0.0)
        if sigma > 0:
            k = _gaussian_kernel1d(2 * int(np.ceil(3 * np.float32(sigma))) + 1, sigma)
            canvas = cv2.sepFilter2D(canvas, -1, k, k, borderType=cv2.BORDER_REFLECT_101)
        if side != size:
            canvas = _bilinear(canvas, size)
        out.append(normalise(canvas, mean, std))
    return np.stack(out)


def _bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """(S, S, C) float32 -> (size, size, C), half-pixel centres, no anti-aliasing (torch's
    `interpolate(mode="bilinear", align_corners=False)`), computed in float32."""
    s = image.shape[0]
    scale = np.float32(s / size)
    src = np.maximum((np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    i0 = np.minimum(src.astype(np.int64), s - 1)
    i1 = np.minimum(i0 + 1, s - 1)
    f = (src - i0).astype(np.float32)
    rows = image[i0] * (1 - f)[:, None, None] + image[i1] * f[:, None, None]
    return rows[:, i0] * (1 - f)[None, :, None] + rows[:, i1] * f[None, :, None]
