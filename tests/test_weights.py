import shutil

import numpy as np
import pytest

from ovdet import Detector
from ovdet import weights as wmod
from ovdet.errors import WeightsNotFoundError


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty cwd, no OVDET_WEIGHTS, an empty HF cache, offline, and no checkout weights/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OVDET_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(wmod, "REPO_ROOT", tmp_path / "checkout")
    return tmp_path


def test_explicit_folder_wins(isolated, tiny_owlv2):
    found = wmod.locate("owlv2-b16", str(tiny_owlv2))
    assert found.path == tiny_owlv2 and found.source == "path"


def test_weights_folder_then_env(isolated, tiny_owlv2, monkeypatch):
    env_dir = isolated / "env"
    shutil.copytree(tiny_owlv2, env_dir / "owlv2-b16")
    monkeypatch.setenv("OVDET_WEIGHTS", str(env_dir))
    found = wmod.locate("owlv2-b16", "google/owlv2-base-patch16-ensemble")
    assert found.source == "OVDET_WEIGHTS"
    shutil.copytree(tiny_owlv2, isolated / "weights" / "owlv2-b16")
    found = wmod.locate("owlv2-b16", "google/owlv2-base-patch16-ensemble")
    assert found.source == "weights/" and found.path == isolated / "weights" / "owlv2-b16"
    # and the preset name then loads through the same path as a real checkpoint
    det = Detector.from_pretrained("owlv2-b16", threshold=0.0, max_detections=3)
    assert det.backend.name == "owlv2"


def test_offline_and_missing_is_one_line_naming_every_place(isolated):
    with pytest.raises(WeightsNotFoundError) as err:
        wmod.locate("owlv2-b16", "google/owlv2-base-patch16-ensemble")
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("weights/owlv2-b16", "$OVDET_WEIGHTS (unset)", "Hugging Face cache", "HF_HUB_OFFLINE", "ovdet weights download owlv2-b16"):
        assert part in msg


def test_hub_cache_is_used_without_network(isolated, tiny_owlv2):
    """A snapshot laid out like huggingface_hub's cache is found offline."""
    repo = isolated / "hf-cache" / "models--google--owlv2-base-patch16-ensemble"
    snap = repo / "snapshots" / "abc123"
    shutil.copytree(tiny_owlv2, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    found = wmod.locate("owlv2-b16", "google/owlv2-base-patch16-ensemble")
    assert found.source == "hub cache" and found.path.resolve() == snap.resolve()


def test_broken_checkpoint_folder_is_a_clear_error(isolated, tiny_owlv2):
    broken = isolated / "broken"
    shutil.copytree(tiny_owlv2, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsNotFoundError, match="cannot load OWL checkpoint"):
        Detector.from_pretrained(str(broken))


def test_download_layout_is_where_lookup_finds_it(isolated, monkeypatch, tiny_owlv2, tiny_clip):
    """`ovdet weights download` of a composite preset puts each checkpoint where `locate`
    looks offline: the main one in weights/<preset>/, the OWLv2 proposer in weights/owlv2-b16/."""
    from ovdet.config import load_config

    fetched = []

    def fake_fetch(repo_id, local_dir=None):  # the hub is unreachable here: copy tiny models
        fetched.append(repo_id)
        shutil.copytree(tiny_owlv2 if "owlv2" in repo_id else tiny_clip, local_dir)
        return local_dir

    monkeypatch.setattr(wmod, "fetch", fake_fetch)
    cfg = load_config("clip-b32-owlv2-proposals")
    from ovdet.downloads import download_preset

    done = download_preset(cfg, isolated / "weights")
    assert fetched == ["openai/clip-vit-base-patch32", "google/owlv2-base-patch16-ensemble"]
    assert [p for _, p in done] == [isolated / "weights" / cfg.name, isolated / "weights" / "owlv2-b16"]
    assert wmod.locate(cfg.name, cfg.weights).path == isolated / "weights" / cfg.name
    assert wmod.locate("", cfg.proposer_weights).path == isolated / "weights" / "owlv2-b16"
    # and the whole preset loads from there, offline
    det = Detector.from_pretrained("clip-b32-owlv2-proposals", proposals=5, threshold=0.0)
    assert len(det.detect(np.zeros((64, 80, 3), np.uint8), ["cat"])) <= 5
