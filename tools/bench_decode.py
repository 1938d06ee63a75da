"""What `reduced_decode` costs and saves: the model input of a JPEG decoded reduced (PIL's
draft, at the scale `Detector.decode_size` picks) against the stock transformers processor on
the full decode, and the decode time of both.

    python tools/bench_decode.py                       # a 4000 x 3000 JPEG made from a COCO photo
    python tools/bench_decode.py photo.jpg --repeats 5

Prints, per model input size (OWLv2 at 960 px, OWL-ViT at 768 px): mean / p99 / max absolute
difference of the processor's pixel values in 8-bit levels (the normalised difference times
255 std), and the median decode time full vs reduced. No weights are needed: only the stock
image processors, built with the checkpoints' sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ovdet.backends.owl import OwlBackend  # noqa: E402
from ovdet.io import read_image  # noqa: E402

# the shared data beside the checkout (as tests/conftest.py finds it), or beside a worktree's parent
COCO_PHOTO = Path("coco-mini-val") / "images" / "000000000139.jpg"
DEFAULT_SOURCE = next((p / "shared" / "data" / COCO_PHOTO for p in (ROOT.parent, ROOT.parent.parent)
                       if (p / "shared" / "data" / COCO_PHOTO).is_file()), None)


def processors() -> dict[str, tuple[object, bool]]:
    """{label: (stock image processor, pads to a square)} at the released checkpoints' sizes."""
    from transformers import Owlv2ImageProcessor, OwlViTImageProcessor

    return {"OWLv2 960 px": (Owlv2ImageProcessor(size={"height": 960, "width": 960}), True),
            "OWL-ViT 768 px": (OwlViTImageProcessor(size={"height": 768, "width": 768},
                                                    crop_size={"height": 768, "width": 768}), False)}


def decode_size_for(processor, pads_to_square: bool):
    """`OwlBackend.decode_size` for this processor (what a Detector with reduced_decode uses)."""
    stand_in = SimpleNamespace(processor=SimpleNamespace(image_processor=processor), pads_to_square=pads_to_square)
    return lambda h, w: OwlBackend.decode_size(stand_in, h, w)


def pixel_values(processor, image) -> np.ndarray:
    return processor(images=image, return_tensors="np")["pixel_values"][0]


def timed(fns, repeats: int) -> list[float]:
    """Median seconds of `repeats` calls of each of `fns`, interleaved (a busy machine slows
    them alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, seen in zip(fns, times):
            start = time.perf_counter()
            fn()
            seen.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def make_large_jpeg(source: Path, out: Path, size: tuple[int, int]) -> Path:
    """`source` upscaled (bicubic) to `size` (w, h) and saved as a quality-90 JPEG."""
    Image.open(source).convert("RGB").resize(size, Image.BICUBIC).save(out, quality=90)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path, help="a JPEG (default: a COCO photo upscaled to --size)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="photo to upscale when no image is given")
    parser.add_argument("--size", default="4000x3000", help="W x H of the generated JPEG (default 4000x3000)")
    parser.add_argument("--repeats", type=int, default=3, help="decodes timed per variant (median)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.image
        if path is None:
            if args.source is None:
                parser.error("no shared data found: give a JPEG or --source")
            w, h = (int(v) for v in args.size.lower().split("x"))
            path = make_large_jpeg(args.source, Path(tmp) / "large.jpg", (w, h))
        full = read_image(path)
        h, w = full.size
        print(f"{path.name if args.image else f'{args.source.name} upscaled'}: {w} x {h} JPEG")
        for label, (processor, pads) in processors().items():
            decode_size = decode_size_for(processor, pads)
            reduced = read_image(path, decode_size=decode_size)
            rh, rw = reduced.array.shape[:2]
            full_s, reduced_s = timed([lambda: read_image(path), lambda: read_image(path, decode_size=decode_size)],
                                      args.repeats)
            std = np.asarray(processor.image_std, np.float32)[:, None, None]
            stock = pixel_values(processor, Image.open(path))  # the stock processor on the full decode
            levels = np.abs(pixel_values(processor, reduced.array) - stock) * std * 255
            print(f"{label}: decoded at {rw} x {rh}; input differs by {levels.mean():.2f} levels on average, "
                  f"{np.percentile(levels, 99):.2f} at p99, {levels.max():.2f} at most; "
                  f"decode {full_s * 1000:.0f} ms full vs {reduced_s * 1000:.0f} ms reduced "
                  f"({full_s / reduced_s:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
