"""`ovdet train` on a synthetic set (coloured shapes on noise, "red square"...) with a tiny
random OWLv2: AP on the trained classes rises clearly (ovdet's own eval, pycocotools) and the
loss falls; prompt tuning leaves other classes' detections bit-identical; --merge 0 gives the
base weights back exactly; lora saves merged weights that load without peft; user errors are
one line, exit 2."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ovdet.cli.app import main
from ovdet.detector import Detector
from ovdet.train import TrainOptions, train
from train_data import make_split

TRAINED = ["red square", "blue circle"]
PROBE = "green triangle"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (two threads on a busy 2-core machine are many
    times slower), and the runs compared bit for bit need the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """(train.json with the two trained classes, val.json with them and the probe class)."""
    folder = tmp_path_factory.mktemp("shapes")
    return (make_split(folder, "train", TRAINED, 32, seed=1),
            make_split(folder, "val", TRAINED + [PROBE], 12, seed=2, categories=TRAINED + [PROBE]))


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def full_run(shapes, tiny_owlv2, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    train_json, val_json = shapes
    # the tiny model's random text tower puts every prompt at cosine ~0.95 to every other, so
    # one template (the preset's) and no augmentation keep the run short and its result sure
    result = train(TrainOptions(data=train_json, model=str(tiny_owlv2), out=out, val=str(val_json), mode="full",
                                steps=240, batch_size=4, lr=3e-3, device="cpu", num_negatives=8,
                                templates="a photo of a {}", augment="none", progress=False, save_every=0))
    return out, result


def test_training_raises_val_ap_and_the_loss_falls(full_run):
    out, result = full_run
    rows = {r["model"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    before, after = rows["base"]["trained"]["AP"], rows["tuned"]["trained"]["AP"]
    assert after > before + 0.10, (before, after)
    assert rows["tuned"]["trained"]["AP50"] > 0.3
    assert "probe" in rows["base"] and "green triangle" in (out / "report.md").read_text()
    losses = [e["loss"] for e in result.losses]
    assert len(losses) == 240 and np.mean(losses[-20:]) < 0.2 * np.mean(losses[:20])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["losses"] == result.losses and metrics["settings"]["mode"] == "full"
    for name in ("loss.png", "forgetting.png", "report.md", "val.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint").exists() and not (out / ".work").exists()
    # the saved folder is a checkpoint every command loads
    dets = Detector.from_pretrained(out / "model", device="cpu", threshold=0.05).detect(
        str(json.loads((out / "val.json").read_text())["images"][0]["file_name"]), TRAINED)
    assert len(dets) > 0


def test_prompt_mode_leaves_other_classes_bit_identical(shapes, tiny_owlv2, tmp_path):
    train_json, val_json = shapes
    train(TrainOptions(data=train_json, model=str(tiny_owlv2), out=tmp_path, mode="prompt", steps=15, batch_size=4,
                       lr=3e-2, device="cpu", num_negatives=4, progress=False, report=False, save_every=0))
    model = tmp_path / "model"
    assert (model / "learned_classes.safetensors").is_file()
    base_w, tuned_w = _weights(tiny_owlv2), _weights(model)
    assert base_w.keys() == tuned_w.keys() and all(torch.equal(base_w[k], tuned_w[k]) for k in base_w)
    images = sorted(str(p) for p in val_json.parent.glob("val_*.png"))[:4]
    base = Detector.from_pretrained(tiny_owlv2, device="cpu", threshold=0.0)
    tuned = Detector.from_pretrained(model, device="cpu", threshold=0.0)
    for a, b in zip(base.detect_batch(images, [PROBE, "dog"]), tuned.detect_batch(images, [PROBE, "dog"])):
        assert len(a) > 0 and np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.scores, b.scores)
        assert np.array_equal(a.class_ids, b.class_ids)
    learned = [d.scores for d in tuned.detect_batch(images, TRAINED)]
    original = [d.scores for d in base.detect_batch(images, TRAINED)]
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(learned, original))


def test_merge_zero_gives_the_base_model_back(shapes, tiny_owlv2, tmp_path):
    train_json, _ = shapes
    opts = dict(data=train_json, model=str(tiny_owlv2), mode="heads", steps=6, batch_size=4, lr=1e-2, device="cpu",
                num_negatives=4, progress=False, report=False, save_every=0)
    train(TrainOptions(out=tmp_path / "m0", merge=0.0, **opts))
    train(TrainOptions(out=tmp_path / "tuned", precision="bf16", **opts))  # autocast on the CPU
    base, merged, tuned = _weights(tiny_owlv2), _weights(tmp_path / "m0" / "model"), _weights(tmp_path / "tuned" / "model")
    assert all(torch.equal(base[k], merged[k]) for k in base)
    assert not torch.equal(base["class_head.dense0.weight"], tuned["class_head.dense0.weight"])


def test_lora_saves_merged_weights_that_load_without_peft(shapes, tiny_owlv2, tmp_path, monkeypatch):
    from transformers import AutoModelForZeroShotObjectDetection

    train_json, _ = shapes
    train(TrainOptions(data=train_json, model=str(tiny_owlv2), out=tmp_path, mode="lora", steps=6, batch_size=4,
                       lr=1e-2, device="cpu", num_negatives=4, progress=False, report=False, save_every=0))
    base, saved = _weights(tiny_owlv2), _weights(tmp_path / "model")
    assert saved.keys() == base.keys() and not any("lora" in k for k in saved)
    q = "owlv2.vision_model.encoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[q], saved[q])  # the adapters are in the weights
    assert torch.equal(base["owlv2.text_model.embeddings.token_embedding.weight"],
                       saved["owlv2.text_model.embeddings.token_embedding.weight"])
    monkeypatch.setitem(sys.modules, "peft", None)  # importing peft now fails
    _, info = AutoModelForZeroShotObjectDetection.from_pretrained(tmp_path / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert Detector.from_pretrained(tmp_path / "model", device="cpu").detect(np.zeros((64, 64, 3), np.uint8), "cat") is not None


def test_user_errors_are_one_line_exit_2(shapes, tiny_owlv2, tmp_path, capsys):
    train_json, _ = shapes

    def one_line(argv) -> str:
        assert main(["train", *map(str, argv)]) == 2
        err = capsys.readouterr().err.strip()
        assert err and "\n" not in err and "Traceback" not in err
        return err

    out = tmp_path / "o"
    assert "ultralytics" in one_line([train_json, "--model", "yolo-world-s", "--out", out])
    assert "not found" in one_line([tmp_path / "nope.json", "--model", tiny_owlv2, "--out", out])
    assert "nothing to resume" in one_line([train_json, "--model", tiny_owlv2, "--out", out, "--resume"])
    assert "unknown 'blur'" in one_line([train_json, "--model", tiny_owlv2, "--out", out, "--augment", "blur"])
    assert "in [0, 1]" in one_line([train_json, "--model", tiny_owlv2, "--out", out, "--merge", "2"])
    (out / "model").mkdir(parents=True)
    assert "--overwrite" in one_line([train_json, "--model", tiny_owlv2, "--out", out])
