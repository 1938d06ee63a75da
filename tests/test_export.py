"""ONNX export: the exported towers reproduce ovdet's fp32 torch detections, any vocabulary,
without torch; the folder holds graphs, JSON and tokenizer files only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovdet import Detector
from ovdet.cli.app import main
from ovdet.errors import ConfigError, OvdetError
from ovdet.export.exporter import export_detector
from ovdet.io import load_image

ROOT = Path(__file__).resolve().parent.parent
VOCABULARIES = (["cat", "dog", "remote control"], ["person", "a photo of a bicycle", "sofa", "tree"])


@pytest.fixture(scope="module")
def clip_owl_config(tmp_path_factory, tiny_clip, tiny_owlv2) -> Path:
    """A CLIP region preset: OWLv2 objectness proposals named by CLIP crops (tiny models)."""
    path = tmp_path_factory.mktemp("cfg") / "clip-owl.yaml"
    path.write_text(f"base: clip-b32-owlv2-proposals\nweights: {tiny_clip}\nproposer_weights: {tiny_owlv2}\n"
                    "proposals: 20\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_owlvit, tiny_owlv2, clip_owl_config, tiny_clip) -> dict[str, tuple[str, Path]]:
    """{name: (torch model, export folder)}; OWL-ViT goes through the CLI, the rest through the API."""
    base = tmp_path_factory.mktemp("exports")
    out = {"owlvit": (str(tiny_owlvit), base / "owlvit"), "owlv2": (str(tiny_owlv2), base / "owlv2"),
           "clip-owlv2": (str(clip_owl_config), base / "clip-owlv2"),
           "clip-windows": (str(tiny_clip), base / "clip-windows")}  # a bare CLIP folder: sliding windows
    assert main(["export", "--model", out["owlvit"][0], "--out", str(out["owlvit"][1])]) == 0
    for name in ("owlv2", "clip-owlv2", "clip-windows"):
        export_detector(out[name][0], out[name][1])
    return out


@pytest.fixture(scope="module")
def images(chelsea_path) -> list[np.ndarray]:
    """Non-square images: the 451x300 photo, a tall crop of it and a wide random one."""
    photo = load_image(chelsea_path)
    rng = np.random.default_rng(3)
    return [photo, np.ascontiguousarray(photo[:, 100:260]), rng.integers(0, 256, (90, 333, 3), dtype=np.uint8)]


def assert_same_detections(exported, reference):
    """Same detections (class, score within 1e-4, box within 0.02 px), matched one to one:
    two detections whose scores agree to 1e-4 may come out in either order."""
    assert len(exported) == len(reference) > 0 and exported.image_size == reference.image_size
    np.testing.assert_allclose(exported.scores, reference.scores, atol=1e-4, rtol=0)  # both sorted by score
    free = set(range(len(reference)))
    for i in range(len(exported)):
        match = [j for j in sorted(free) if reference.class_ids[j] == exported.class_ids[i]
                 and abs(reference.scores[j] - exported.scores[i]) <= 1e-4
                 and np.abs(reference.xyxy[j] - exported.xyxy[i]).max() <= 0.02
                 and abs(reference.raw_scores[j] - exported.raw_scores[i]) <= 1e-3]
        assert match, f"exported detection {i} ({exported.labels[i]}, {exported.scores[i]:.5f}, {exported.xyxy[i]}) has no twin"
        free.remove(match[0])


@pytest.mark.parametrize("name", ["owlvit", "owlv2", "clip-owlv2", "clip-windows"])
def test_export_detections_equal_torch_fp32_for_any_vocabulary(exports, images, name):
    model, folder = exports[name]
    kw = dict(device="cpu", cache_text=False, threshold=0.0, nms_iou=0.3)
    exported = Detector.from_pretrained(str(folder), **kw)
    reference = Detector.from_pretrained(model, precision="fp32", **kw)
    assert exported.backend.numpy_arrays and type(exported.backend).__name__.startswith("Onnx")
    for vocabulary in VOCABULARIES:  # two vocabularies, one export
        for got, want in zip(exported.detect_batch(images, vocabulary), reference.detect_batch(images, vocabulary)):
            assert_same_detections(got, want)


def test_clip_export_negatives_and_given_boxes_match_torch(exports, images):
    model, folder = exports["clip-owlv2"]
    kw = dict(device="cpu", cache_text=False, threshold=0.0)
    exported, reference = Detector.from_pretrained(str(folder), **kw), Detector.from_pretrained(model, precision="fp32", **kw)
    boxes = [[10, 20, 200, 220], [300, 40, 500, 160], [-5, -5, 40, 40]]
    got = exported.detect(images[0], "cat,dog", boxes=boxes, negatives="statue")
    want = reference.detect(images[0], "cat,dog", boxes=boxes, negatives="statue")
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.xyxy, want.xyxy, atol=0.02, rtol=0)
    with pytest.raises(OvdetError, match="outside"):
        exported.detect(images[0], "cat", boxes=[[600, 10, 700, 20]])


def test_owl_export_refuses_given_boxes(exports, images):
    det = Detector.from_pretrained(str(exports["owlv2"][1]), cache_text=False)
    with pytest.raises(OvdetError, match="CLIP preset"):
        det.detect(images[0], "cat", boxes=[[0, 0, 10, 10]])


def test_objectness_fusion_matches_torch(exports, images):
    model, folder = exports["owlv2"]
    kw = dict(device="cpu", cache_text=False, threshold=0.0, objectness_weight=0.5)
    got = Detector.from_pretrained(str(folder), **kw).detect(images[1], VOCABULARIES[0])
    want = Detector.from_pretrained(model, precision="fp32", **kw).detect(images[1], VOCABULARIES[0])
    assert_same_detections(got, want)
    with pytest.raises(ConfigError, match="objectness"):
        Detector.from_pretrained(str(exports["owlvit"][1]), objectness_weight=0.5)


@pytest.mark.parametrize("own", ["platt", "isotonic"])
def test_a_calibration_of_the_torch_model_serves_its_export(exports, images, tmp_path, own):
    """A calibration file fitted for the torch model applies to its ONNX export (numpy maps)
    with the same calibrated scores and per-class thresholds."""
    from ovdet.calibration import Calibration, ClassEntry, model_identity
    from ovdet.calibrators import Isotonic, Platt

    model, folder = exports["owlv2"]
    kw = dict(device="cpu", cache_text=False, nms_iou=0.3)
    reference = Detector.from_pretrained(model, precision="fp32", **kw)
    calibrator = Platt(1.5, 4.0) if own == "platt" else Isotonic((0.0005, 0.002, 0.01), (0.2, 0.5, 0.9))
    cal = Calibration(method=own, target="f1", shared=Platt(1.0, 3.0), shared_threshold=0.3,
                      classes={"cat": ClassEntry("cat", 0.2, "class", calibrator), "dog": ClassEntry("dog", 0.4)},
                      model=model_identity(reference.config), templates=reference.templates)
    path = cal.save(tmp_path / "cal.yaml")
    exported = Detector.from_pretrained(str(folder), calibration=str(path), **kw)
    reference = Detector.from_pretrained(model, precision="fp32", calibration=str(path), **kw)
    assert exported.backend.numpy_arrays
    for got, want in zip(exported.detect_batch(images, ["cat", "dog"]), reference.detect_batch(images, ["cat", "dog"])):
        assert_same_detections(got, want)
        np.testing.assert_allclose(np.sort(got.extra["uncalibrated_score"]),
                                   np.sort(want.extra["uncalibrated_score"]), atol=1e-4, rtol=0)


def test_detecting_with_an_export_needs_no_torch(exports, chelsea_path, tmp_path):
    """torch (and transformers) are made unimportable in a fresh interpreter: the export still
    detects through the API and the CLI, with the vocabulary cache."""
    script = f"""
import json, sys
sys.modules["torch"] = None          # `import torch` now raises ImportError
sys.modules["transformers"] = None
from ovdet import Detector
from ovdet.cli.app import main
dets = Detector.from_pretrained({str(exports['owlv2'][1])!r}, threshold=0.0).detect({str(chelsea_path)!r}, "cat,dog")
assert len(dets) > 0
rc = main(["detect", {str(chelsea_path)!r}, "--classes", "cat,dog", "--model", {str(exports['clip-owlv2'][1])!r},
           "--json", {str(tmp_path / 'out.json')!r}])
print(json.dumps({{"rc": rc, "n": len(dets), "torch": sys.modules.get("torch") is not None,
                  "loaded": sorted(m for m in sys.modules if m.startswith(("torch", "transformers"))
                                   and sys.modules[m] is not None)}}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OVDET_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0 and report["n"] > 0
    assert not report["torch"] and report["loaded"] == []
    assert json.loads((tmp_path / "out.json").read_text())[0]["image"] == str(chelsea_path)
    assert list((tmp_path / "cache" / "text").glob("*.npy"))  # vocabularies cached as with torch


PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


@pytest.mark.parametrize("name", ["owlvit", "owlv2", "clip-owlv2"])
def test_export_folder_holds_graphs_json_and_tokenizer_only(exports, name):
    import onnx

    folder = exports[name][1]
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".onnx", ".json", ".txt"}
    for path in files:
        with open(path, "rb") as fh:
            assert not fh.read(2).startswith(PICKLE_MAGIC), f"{path} is a pickle"
    manifest = json.loads((folder / "manifest.json").read_text())
    for graph in manifest["graphs"].values():
        onnx.checker.check_model(str(folder / graph["file"]))
    assert (folder / manifest["tokenizer"]["file"]).is_file()


def test_manifest_describes_graphs_and_batch_and_classes_are_dynamic(exports):
    import onnxruntime as ort

    import ovdet

    folder = exports["owlv2"][1]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "ovdet-onnx" and manifest["ovdet_version"] == ovdet.__version__
    assert manifest["preprocess"]["mode"] == "padded_square" and manifest["preprocess"]["size"] == 128
    assert manifest["boxes"]["pads_to_square"] is True and manifest["model"]["model_type"] == "owlv2"
    assert manifest["model"]["source"] == exports["owlv2"][0] and exports["owlv2"][0] in manifest["model"]["identity"]
    image = manifest["graphs"]["image"]
    assert image["inputs"]["pixel_values"] == ["batch", 3, 128, 128]
    assert image["outputs"]["image_feats"] == ["batch", 64, 32] and image["outputs"]["objectness"] == ["batch", 64]
    assert manifest["graphs"]["class_head"]["outputs"]["logits"] == ["batch", 64, "classes"]
    image_s = ort.InferenceSession(str(folder / image["file"]), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(folder / "class_head.onnx"), providers=["CPUExecutionProvider"])
    feats, boxes, obj = image_s.run(None, {"pixel_values": np.zeros((3, 3, 128, 128), np.float32)})
    assert feats.shape == (3, 64, 32) and boxes.shape == (3, 64, 4) and obj.shape == (3, 64)
    for classes in (1, 7):
        logits = head.run(None, {"image_feats": feats, "class_embeds": np.ones((classes, 32), np.float32)})[0]
        assert logits.shape == (3, 64, classes)
    assert Detector.from_pretrained(str(folder)).config.threshold == manifest["config"]["threshold"]


def test_tokenizer_matches_transformers(exports, tiny_clip):
    from transformers import AutoTokenizer

    from ovdet.backends.onnx.session import PromptTokenizer

    prompts = ["a photo of a cat", "Remote-Control!", "x " * 40, "an émigré's café"]
    for folder, source, padding in ((exports["owlvit"][1], exports["owlvit"][0], "max_length"),
                                    (exports["clip-owlv2"][1], str(tiny_clip), "longest")):
        manifest = json.loads((folder / "manifest.json").read_text())
        ours = PromptTokenizer(folder, manifest["tokenizer"])
        ids, mask = ours.pad(ours.ids(prompts))
        ref = AutoTokenizer.from_pretrained(source)(prompts, padding=padding, truncation=True, return_tensors="np")
        np.testing.assert_array_equal(ids, ref["input_ids"])
        np.testing.assert_array_equal(mask, ref["attention_mask"])


def test_export_vocabulary_is_cached_on_disk(exports, tmp_path):
    from ovdet.cache import TextEmbeddingCache

    folder = exports["owlvit"][1]
    calls = []

    def counting(det):
        encode = det.backend.encode_text
        det.backend.encode_text = lambda prompts: calls.append(len(prompts)) or encode(prompts)
        return det

    cache = TextEmbeddingCache(tmp_path)
    first = counting(Detector(Detector.from_pretrained(str(folder)).backend, Detector.from_pretrained(str(folder)).config, cache))
    a = first.class_embeddings(("cat", "dog"))
    second = counting(Detector(Detector.from_pretrained(str(folder)).backend, first.config, cache))
    b = second.class_embeddings(("cat", "dog"))
    assert calls == [2] and isinstance(b, np.ndarray)
    np.testing.assert_array_equal(a, b)


def test_export_precision_and_unsupported_models_are_one_line_errors(exports, tmp_path, capsys, tiny_clip):
    with pytest.raises(ConfigError, match="exported in fp32"):
        Detector.from_pretrained(str(exports["owlvit"][1]), precision="bf16")
    assert main(["export", "--model", "yolo-world-s", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "YOLO-World" in err and "ovdet exports OWL-ViT" in err
    pooled = tmp_path / "pooled.yaml"
    pooled.write_text(f"base: clip-b32-pooled-owlv2-proposals\nweights: {tiny_clip}\n", encoding="utf-8")
    assert main(["export", "--model", str(pooled), "--out", str(tmp_path / "p")]) == 2
    assert "region_mode 'pooled'" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["export", "--model", exports["owlvit"][0], "--out", str(tmp_path / "busy")]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "busy" / "notes.txt").exists()
    assert main(["export", "--model", str(exports["owlvit"][1]), "--out", str(tmp_path / "again")]) == 2
    assert "already an ONNX export" in capsys.readouterr().err


def test_check_prints_the_largest_differences(exports, chelsea_path, tmp_path, capsys):
    rc = main(["export", "--model", exports["owlv2"][0], "--out", str(tmp_path / "e"), "--check", str(chelsea_path)])
    out = capsys.readouterr().out
    assert rc == 0
    values = dict(line.split() for line in out.splitlines() if line.startswith("  "))
    assert float(values["candidate_scores"]) < 1e-4 and float(values["candidate_boxes_px"]) < 0.02
    assert values["torch_detections"] == values["export_detections"]


def test_fp16_export_runs_close_to_fp32(exports, tmp_path, images):
    model, _ = exports["owlvit"]
    export_detector(model, tmp_path / "fp16", precision="fp16")
    manifest = json.loads((tmp_path / "fp16" / "manifest.json").read_text())
    assert manifest["precision"] == "fp16"
    kw = dict(device="cpu", cache_text=False, threshold=0.0, nms_iou=1.0, max_detections=1000)
    half = Detector.from_pretrained(str(tmp_path / "fp16"), **kw).backend
    full = Detector.from_pretrained(str(exports["owlvit"][1]), **kw)
    embeds = full.class_embeddings(tuple(VOCABULARIES[0]))
    got, want = half.predict(images[:1], embeds)[0], full.backend.predict(images[:1], embeds)[0]
    assert np.abs(got.scores - want.scores).max() < 0.01 and np.abs(got.boxes - want.boxes).max() < 2.0


def test_commands_that_need_torch_models_say_so_for_an_export(exports, chelsea_path, capsys):
    rc = main(["classify", str(chelsea_path), "--classes", "cat,dog", "--model", str(exports["clip-windows"][1])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "is an ONNX export" in err
