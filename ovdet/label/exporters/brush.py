"""Label Studio's brush RLE: a mask as the `value.rle` byte list of a "brushlabels" result.

Label Studio stores a brush mask as its RGBA pixels (row-major, 4 values a pixel: 0 outside,
255 inside) packed by thi.ng's rle-pack, which its editor decodes and label-studio-converter's
`brush.decode_rle` reads back. The bit stream, most significant bit first:

    32 bits   number of values (width x height x 4)
     5 bits   word size - 1 (8-bit values: 7)
    4 x 4 bits  the four run-length field widths - 1 (3, 4, 8, 16)
    per run   1 bit "repeat" (1), 2 bits which width, (run length - 1) in that width,
              the value in 8 bits
    zero bits to the next byte

Runs are computed from the mask's crop (row-major run starts and ends shifted into the image),
so no image-size array is made; a run longer than 65,536 values is written as several.
"""

from __future__ import annotations

import numpy as np

from ...errors import OvdetError

FIELD_WIDTHS = (3, 4, 8, 16)
MAX_RUN = 1 << FIELD_WIDTHS[-1]
_HEADER = "".join(f"{v - 1:04b}" for v in FIELD_WIDTHS)


class BrushSizeError(OvdetError, ValueError):
    """An image too large for Label Studio's brush format (its value count has 32 bits)."""


def _row_runs(crop: np.ndarray, y: int, x: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) in row-major pixel index of the runs of ones of `crop` placed at (y, x)
    in an image `w` wide; runs that continue on the next image row are joined."""
    padded = np.zeros((crop.shape[0], crop.shape[1] + 2), np.int8)
    padded[:, 1:-1] = crop
    step = np.diff(padded, axis=1)
    s_rows, s_cols = np.nonzero(step == 1)  # sorted by row, then column: row-major order
    e_rows, e_cols = np.nonzero(step == -1)
    starts = (y + s_rows) * w + x + s_cols
    ends = (y + e_rows) * w + x + e_cols
    touch = ends[:-1] == starts[1:]  # a run to the right edge and one from the left edge below
    return starts[np.r_[True, ~touch]], ends[np.r_[~touch, True]]


def _field(length: int, value: int) -> str:
    """The bits of one repeat run of `length` <= MAX_RUN values."""
    for k, width in enumerate(FIELD_WIDTHS):
        if length <= 1 << width:
            return f"1{k:02b}{length - 1:0{width}b}{value:08b}"
    raise AssertionError(length)


def brush_rle(crop: np.ndarray, origin: tuple[int, int], image_size: tuple[int, int]) -> list[int]:
    """The brush RLE bytes of a mask given as its bool `crop` at `origin` = (y, x) in an image of
    `image_size` = (height, width)."""
    h, w = image_size
    total = h * w * 4
    if total >= 1 << 32:
        raise BrushSizeError(f"a {w}x{h} image is too large for Label Studio's brush masks "
                             "(use --mask-format polygon)")
    y, x = origin
    starts, ends = _row_runs(np.asarray(crop, bool), y, x, w) if crop.size else (np.zeros(0, int), np.zeros(0, int))
    bounds = np.empty(2 * len(starts) + 2, np.int64)
    bounds[0], bounds[-1] = 0, h * w
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    lengths = np.diff(bounds) * 4  # RGBA: every pixel is four equal values
    bits = [f"{total:032b}", f"{8 - 1:05b}", _HEADER]
    for k, length in enumerate(lengths.tolist()):
        value = 255 if k % 2 else 0
        while length > 0:
            run = min(length, MAX_RUN)
            bits.append(_field(run, value))
            length -= run
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return list(int(stream, 2).to_bytes(len(stream) // 8, "big"))
