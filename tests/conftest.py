"""Shared fixtures: tiny OWL checkpoints saved to disk, the shared real-data folder, images.

No test touches the network: HF_HUB_OFFLINE is forced before transformers is imported, and the
tiny models are built from configs and loaded back from disk through `Detector.from_pretrained`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_tiny_models = _load_tool("make_tiny_models")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{"owlvit": folder, "owlv2": folder}: tiny random checkpoints saved with save_pretrained."""
    base = tmp_path_factory.mktemp("tiny")
    return {kind: make_tiny_models.make_owl(kind, base / kind) for kind in ("owlvit", "owlv2")}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP checkpoint (joint space 32-d) saved with save_pretrained."""
    return make_tiny_models.make_clip(tmp_path_factory.mktemp("tiny") / "clip")


@pytest.fixture(scope="session")
def tiny_clip512(tmp_path_factory) -> Path:
    """A tiny random CLIP with a 512-d joint space, the width YOLO-World's text input expects."""
    return make_tiny_models.make_clip(tmp_path_factory.mktemp("tiny") / "clip512", projection_dim=512)


@pytest.fixture(scope="session")
def tiny_sam3(tmp_path_factory) -> Path:
    """A tiny random SAM 3 (Sam3Model, 112 px, 20 queries) saved with save_pretrained."""
    return make_tiny_models.make_sam3(tmp_path_factory.mktemp("tiny") / "sam3")


@pytest.fixture(scope="session")
def tiny_owlv2(tiny_models) -> Path:
    return tiny_models["owlv2"]


@pytest.fixture(scope="session")
def tiny_owlvit(tiny_models) -> Path:
    return tiny_models["owlvit"]


def shared_data_dir() -> Path | None:
    env = os.environ.get("OVDET_SHARED_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $OVDET_SHARED_DATA); tests using it skip when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data not found: set OVDET_SHARED_DATA or place it at ../shared/data")
    return path


@pytest.fixture(scope="session")
def chelsea_path() -> Path:
    return EXAMPLES / "chelsea.jpg"  # 451 x 300, CC0 (scikit-image)


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return EXAMPLES / "astronaut.jpg"  # 512 x 512, public domain (NASA, via scikit-image)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_text_cache(tmp_path_factory, monkeypatch):
    """Each test session writes vocabulary embeddings to its own temporary cache."""
    monkeypatch.setenv("OVDET_CACHE", str(tmp_path_factory.getbasetemp() / "ovdet-cache"))


def _run_folders() -> set[Path]:
    runs = ROOT / "runs"
    return set(runs.glob("*/*")) if runs.is_dir() else set()


@pytest.fixture(autouse=True)
def _no_run_folders_in_the_checkout():
    """Tests write only under temporary folders: a test that leaves a run folder (runs/<task>/<name>)
    in the repository fails, named (use `monkeypatch.chdir(tmp_path)` or an explicit --out)."""
    before = _run_folders()
    yield
    new = sorted(_run_folders() - before)
    if new:
        pytest.fail(f"the test wrote run folder(s) into the checkout: {', '.join(str(p.relative_to(ROOT)) for p in new)}",
                    pytrace=False)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_models, tiny_clip, tiny_clip512, tiny_sam3) -> Path:
    """What `python tools/make_tiny_models.py DIR` writes, from the session's tiny checkpoints:
    owlvit/, owlv2/, clip/, clip512/, sam3/, yolo.pt, yolo-world.pt, the composite configs and
    weights/ (every preset name linked to a tiny checkpoint, for OVDET_WEIGHTS)."""
    out = tmp_path_factory.mktemp("tiny-dir")
    for name, target in (("owlvit", tiny_models["owlvit"]), ("owlv2", tiny_models["owlv2"]), ("clip", tiny_clip),
                         ("clip512", tiny_clip512), ("sam3", tiny_sam3)):
        (out / name).symlink_to(target, target_is_directory=True)
    make_tiny_models.make_yolo(out / "yolo.pt")
    make_tiny_models.make_yolo(out / "yolo-world.pt", world=True)
    make_tiny_models.make_sam("sam2", out / "sam2")  # the masker presets (sam2-hiera-*) load it
    make_tiny_models.write_composite_configs(out)
    make_tiny_models.link_presets(out, out / "weights")
    return out
