"""Writing the `manifest.json` of an export folder; its format and reading live with the
backend that runs exports (`ovdet.backends.onnx.manifest`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# the exporter names the format's constants and the export-folder check from here
from ..backends.onnx.manifest import FORMAT, FORMAT_VERSION, MANIFEST, is_export_dir

# detector settings that describe where a model came from or how torch runs it, not how an
# export runs: left out of the manifest's "config"
NOT_EXPORTED = ("name", "weights", "proposer_weights", "text_weights", "device", "precision", "compile", "description")


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "NOT_EXPORTED", "is_export_dir", "write_manifest"]
