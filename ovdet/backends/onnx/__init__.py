"""Running an `ovdet export` folder with onnxruntime, without torch.

`load_export(config)` returns a backend that the ordinary `Detector` drives (same vocabulary
cache, thresholds, NMS); it works in numpy arrays (`numpy_arrays = True`), so the Detector's
post-processing takes its numpy path. Preprocessing replicates the transformers processors in
numpy/OpenCV (`preprocess.py`), prompts are tokenized with the `tokenizers` library from the
exported tokenizer files (`tokenizer.py`), box geometry and NMS are `ovdet.geometry`.

    det = Detector.from_pretrained("exports/owlvit-b32")   # a folder written by `ovdet export`
"""

from __future__ import annotations

from pathlib import Path


def load_export(config):
    """The backend for the export folder named by `config.weights` (a `DetectorConfig`)."""
    from ...errors import ConfigError
    from .manifest import read_manifest
    from .session import Runner

    folder = Path(config.weights).expanduser()
    manifest = read_manifest(folder)
    if config.precision not in ("auto", manifest["precision"]):
        raise ConfigError(f"{folder} was exported in {manifest['precision']}; an export runs in that precision "
                          f"(re-export with --precision {config.precision} for another)")
    if config.compile:
        raise ConfigError("compile applies to torch models; an ONNX export is already a compiled graph")
    runner = Runner(folder, manifest, config.device)
    if manifest["family"] == "owl":
        from .owl import OnnxOwlBackend

        return OnnxOwlBackend(runner, objectness_weight=config.objectness_weight)
    if manifest["family"] == "clip":
        from .clip_regions import OnnxClipRegionBackend

        return OnnxClipRegionBackend(runner, config)
    raise ConfigError(f"{folder}: unknown model family {manifest['family']!r} in the manifest")


__all__ = ["load_export"]
