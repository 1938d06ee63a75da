"""Reading the `manifest.json` of an `ovdet export` folder: what the ONNX graphs are and how to
feed them. `ovdet.export.manifest` writes it.

Torch-free (the runtime reads it). A manifest records the format version, ovdet's version, the
model it came from (source and checkpoint identity), the detector settings to run it with
(threshold, templates, NMS...), the preprocessing (mode, input side, mean, std), the box
geometry (OWLv2's padding to a square), the tokenizer (file, context length, padding) and,
for every graph, its file and its inputs and outputs with their shapes ("batch", "classes",
"tokens" name the dynamic axes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...files import read_json

MANIFEST = "manifest.json"
FORMAT = "ovdet-onnx"
FORMAT_VERSION = 1


def is_export_dir(path: str | Path) -> bool:
    """True when `path` is a folder holding an ovdet export (its manifest.json)."""
    return bool(str(path)) and (Path(path).expanduser() / MANIFEST).is_file()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder; `ConfigError` (one line) when it is unreadable, not
    an ovdet export, or from a newer format than this ovdet reads."""
    path = Path(folder).expanduser() / MANIFEST
    data = read_json(path, "export manifest", error=ConfigError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an ovdet export manifest (format {FORMAT!r} expected)")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ConfigError(f"{path} has format version {data.get('format_version')}; this ovdet reads up to "
                          f"{FORMAT_VERSION}: upgrade ovdet")
    return data


def export_config(folder: str | Path) -> dict[str, Any]:
    """The detector settings an export runs with (a mapping for `ovdet.config.load_config`)."""
    manifest = read_manifest(folder)
    return {**manifest["config"], "description": f"ONNX export of {manifest['model']['source']}"}

