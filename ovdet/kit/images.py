"""The images named on a command line, read batch by batch, and the detector built lazily."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, ImageReadError
from ..progress import progress_bar


def output_name(path: str, used: set[str]) -> str:
    """Annotated-image file name: the input's name, .jpg/.png kept, made unique in the folder."""
    p = Path(path)
    suffix = p.suffix.lower() if p.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
    name, k = f"{p.stem}{suffix}", 1
    while name in used:
        name, k = f"{p.stem}_{k}{suffix}", k + 1
    used.add(name)
    return name


class LazyDetector:
    """The Detector of a config, built on first use, and the image loader that goes with it.

    `load(path)` reads an image for the detector (max_pixels; with `reduced_decode`, JPEGs
    decoded at the size the model needs); it builds the model only once a file's header has
    been read, so that a missing or unreadable first image still fails before a model loads."""

    def __init__(self, config):
        self.config = config
        self.detector = None

    def get(self):
        if self.detector is None:
            from ..detector import Detector

            self.detector = Detector.from_config(self.config)
        return self.detector

    def load(self, path: str):
        from ..io import read_image

        reduce = self.config.reduced_decode and (lambda h, w: self.get().decode_size(h, w))
        return read_image(path, self.config.max_pixels, reduce or None)


class ImageBatches:
    """Reads the images named on the command line in batches, reporting and skipping the
    unreadable ones; a single image that cannot be read is an error (exit 2)."""

    def __init__(self, image_args: Sequence[str], batch_size: int, loader: Callable[[str], Any] | None = None,
                 desc: str | None = None):
        """`loader(path)` reads one image (default: `ovdet.io.load_image`); it may return an
        array or a `LoadedImage`, and raises `ImageReadError` for images to skip. `desc`: the
        progress bar's label (the command)."""
        from ..io import expand_image_args, is_url

        self.paths = list(expand_image_args(image_args))
        if not self.paths:
            raise ImageReadError(f"no images found in {' '.join(image_args)}")
        missing = [p for p in self.paths if not (is_url(p) or os.path.isfile(p))]
        if len(missing) == len(self.paths):
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ImageReadError(f"image not found: {missing[0]}{more}")
        self.batch_size = batch_size
        self.loader = loader
        self.failed: list[str] = []
        self.bar = progress_bar(total=len(self.paths), desc=desc, unit="img", enabled=len(self.paths) > 1)

    def __iter__(self):
        """Yields (paths, images) of the readable images, batch by batch: RGB arrays, or what
        the loader returns."""
        from ..io import load_image

        loader = self.loader or load_image
        for start in range(0, len(self.paths), self.batch_size):
            batch_paths, arrays = [], []
            for path in self.paths[start : start + self.batch_size]:
                try:
                    arrays.append(loader(path))
                    batch_paths.append(path)
                except ImageReadError as exc:
                    if len(self.paths) == 1:
                        raise
                    self.failed.append(path)
                    self.bar.write(f"ovdet: skipping {path}: {exc}", file=sys.stderr)
                    self.bar.update(1)
            if arrays:
                yield batch_paths, arrays
                self.bar.update(len(arrays))
        self.bar.close()

    def exit_code(self, processed: int) -> int:
        if self.failed and not processed:
            return EXIT_USAGE
        return EXIT_PARTIAL if self.failed else EXIT_OK
