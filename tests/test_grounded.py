"""Grounding DINO, MM-Grounding-DINO and OmDet-Turbo through the Detector: tiny random
checkpoints saved and loaded back, results against transformers' own post-processing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_models
from ovdet import Detector, Example
from ovdet.cli.app import main
from ovdet.errors import ExemplarError, OvdetError, VocabularyError

NAMES = ["cat", "traffic light", "dog"]
# 14 names of 3-9 letters: with max_text_len 32 and one token per letter, four chunks
LONG = ["cat", "dog", "horse", "zebra", "giraffe", "bicycle", "umbrella", "kite", "orange", "carrot", "bench",
        "toaster", "mouse", "teddy bear"]


@pytest.fixture(scope="session")
def tiny_grounded(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("grounded")
    return {
        "gdino": make_tiny_models.make_grounding_dino(base / "gdino"),
        "mmgdino": make_tiny_models.make_grounding_dino(base / "mmgdino", mm=True),
        "gdino32": make_tiny_models.make_grounding_dino(base / "gdino32", max_text_len=32, seed=1),
        "omdet": make_tiny_models.make_omdet_turbo(base / "omdet"),
    }


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


def transformers_pair(folder):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    return AutoProcessor.from_pretrained(folder), AutoModelForZeroShotObjectDetection.from_pretrained(folder).eval()


def dino_reference(processor, model, image, names, threshold):
    """transformers' own result for one image and one prompt: (scores, clipped boxes, tokens of
    each class) with scores sorted high to low."""
    inputs = processor(images=image, text=[list(names)], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    h, w = image.shape[:2]
    res = processor.post_process_grounded_object_detection(out, inputs["input_ids"], threshold=threshold,
                                                           target_sizes=[(h, w)])[0]
    order = torch.argsort(-res["scores"], stable=True)
    boxes = res["boxes"][order]
    boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                         boxes[:, 3].clamp(0, h)], 1)
    # the naming rule, computed independently: tokens between "." separators belong to the
    # successive classes; each kept query takes the class with the highest token probability
    ids = inputs["input_ids"][0].tolist()
    owner, cls = [], 0
    for t in ids[1:-1]:
        owner.append(-1 if t == 1012 else cls)
        cls += t == 1012
    probs = torch.sigmoid(out.logits[0, :, 1 : len(ids) - 1])
    per_class = torch.stack([probs[:, [i for i, o in enumerate(owner) if o == c]].max(1).values
                             for c in range(len(names))], 1)
    keep = torch.sigmoid(out.logits[0]).max(1).values > threshold
    named = per_class[keep].argmax(1)[order]
    return res["scores"][order].numpy(), boxes.numpy(), named.numpy()


@pytest.mark.parametrize("kind", ["gdino", "mmgdino"])
def test_dino_detections_equal_transformers_post_processing(tiny_grounded, kind):
    folder = tiny_grounded[kind]
    det = Detector.from_pretrained(folder, device="cpu", precision="fp32", threshold=0.2, max_detections=900,
                                   cache_text=False)
    assert det.config.backend == "grounding" and det.config.nms_iou == 1.0  # the family's preset
    processor, model = transformers_pair(folder)
    images = [photo(50, 90), photo(70, 40, 1), photo(50, 90, 2)]  # two sizes: batched by size
    for image, dets in zip(images, det.detect_batch(images, NAMES, batch_size=3)):
        scores, boxes, named = dino_reference(processor, model, image, NAMES, 0.2)
        assert len(dets) == len(scores) > 0
        np.testing.assert_allclose(dets.scores, scores, atol=1e-6)
        np.testing.assert_allclose(dets.xyxy, boxes, atol=1e-4)
        assert dets.class_ids.tolist() == named.tolist()


def test_long_vocabulary_runs_in_chunks_over_one_image_pass(tiny_grounded):
    folder = tiny_grounded["gdino32"]
    det = Detector.from_pretrained(folder, device="cpu", precision="fp32", threshold=0.1, max_detections=900,
                                   cache_text=False)
    table = det.class_table.embed(det.resolve_classes(LONG).vocabulary)
    assert len(table.chunks) >= 3
    assert all(c.input_ids.shape[1] <= 32 for c in table.chunks)
    assert [i for c in table.chunks for i in c.classes] == list(range(len(LONG)))
    processor, model = transformers_pair(folder)
    vision, text = det.backend.vision, det.backend.text
    images = [photo(60, 100, 3), photo(60, 100, 4)]
    before_v, before_t = vision.passes, text.passes
    results = det.detect_batch(images, LONG, batch_size=2)
    assert vision.passes - before_v == 1  # one backbone pass for the batch, whatever the chunks
    assert text.passes - before_t == len(table.chunks)  # each chunk's text tower once
    det.detect_batch(images, LONG, batch_size=1)
    assert vision.passes - before_v == 3  # one per image when they run one by one
    assert text.passes - before_t == len(table.chunks)  # and the text not again for the next images
    for image, dets in zip(images, results):
        expected = []  # each chunk run alone by transformers, its classes offset to the vocabulary
        for chunk in table.chunks:
            names = [LONG[i] for i in chunk.classes]
            scores, boxes, named = dino_reference(processor, model, image, names, 0.1)
            expected += [(s, tuple(b), chunk.classes[n]) for s, b, n in zip(scores, boxes, named)]
        assert len(dets) == len(expected) > 0
        unused = set(range(len(dets)))  # match by class and box: a batch of 2 differs from 1 image by 1e-6
        for score, box, cls in expected:
            hit = [i for i in unused if dets.class_ids[i] == cls and abs(dets.scores[i] - score) < 1e-5
                   and np.abs(dets.xyxy[i] - box).max() < 2e-3]
            assert hit, (score, box, cls)
            unused.remove(hit[0])


def test_omdet_detections_equal_transformers_post_processing(tiny_grounded):
    folder = tiny_grounded["omdet"]
    det = Detector.from_pretrained(folder, device="cpu", precision="fp32", cache_text=False, threshold=0.3)
    assert det.config.backend == "omdet" and det.config.multi_label and det.splits_image_pass
    processor, model = transformers_pair(folder)
    images = [photo(50, 90), photo(80, 30, 1)]
    for image, dets in zip(images, det.detect_batch(images, NAMES)):
        inputs = processor(images=image, text=NAMES, return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs)
        ref = processor.post_process_grounded_object_detection(out, text_labels=NAMES, threshold=0.3, nms_threshold=0.5,
                                                              target_sizes=[image.shape[:2]])[0]
        assert len(dets) == len(ref["scores"]) > 0
        order = torch.argsort(-ref["scores"], stable=True)
        np.testing.assert_allclose(dets.scores, ref["scores"][order].numpy(), atol=1e-5)
        np.testing.assert_allclose(dets.xyxy, ref["boxes"][order].numpy(), atol=1e-3)
        assert dets.class_ids.tolist() == ref["labels"][order].tolist()


def test_omdet_encodes_each_class_once_through_ovdet_caches(tiny_grounded, tmp_path, monkeypatch):
    monkeypatch.setenv("OVDET_CACHE", str(tmp_path / "cache"))
    folder = tiny_grounded["omdet"]
    det = Detector.from_pretrained(folder, device="cpu", precision="fp32")
    image = photo(40, 60)
    first = det.detect(image, NAMES)
    assert det.backend.text_passes == 3
    det.detect(image, ["dog", "cat", "bus"])  # one new class
    assert det.backend.text_passes == 4
    det.detect(image, NAMES)
    assert det.backend.text_passes == 4
    assert not det.backend.model.language_cache_class.cache  # transformers' LRU is not used
    again = Detector.from_pretrained(folder, device="cpu", precision="fp32")  # a new process: the disk cache
    second = again.detect(image, NAMES)
    assert again.backend.text_passes == 0
    np.testing.assert_allclose(second.scores, first.scores, atol=1e-6)


def test_refusals_are_one_line(tiny_grounded, tmp_path, capsys):
    det = Detector.from_pretrained(tiny_grounded["gdino"], device="cpu", precision="fp32", cache_text=False)
    image = photo(40, 60)
    with pytest.raises(ExemplarError, match="cannot take image exemplars"):
        det.detect(image, ["cat", Example("dog", image)])
    with pytest.raises(OvdetError, match="predicts its own boxes"):
        det.detect(image, NAMES, boxes=[[0, 0, 10, 10]])
    with pytest.raises(VocabularyError, match="one phrase per class"):
        Detector.from_pretrained(tiny_grounded["omdet"], device="cpu", templates="photo")
    Image.fromarray(image).save(tmp_path / "a.png")
    for argv in (["explain", str(tmp_path / "a.png"), "--classes", "cat", "--model", str(tiny_grounded["gdino"])],
                 ["export", "--model", str(tiny_grounded["omdet"]), "--out", str(tmp_path / "onnx")]):
        capsys.readouterr()
        assert main(argv + ["--project", str(tmp_path)]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("ovdet: error:"), err


def test_detect_eval_and_label_commands(tiny_grounded, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(48, 80), (64, 40)]):
        Image.fromarray(photo(h, w, i)).save(images / f"{i}.png")
    ann = {"images": [{"id": i, "file_name": f"{i}.png", "height": h, "width": w}
                      for i, (h, w) in enumerate([(48, 80), (64, 40)])],
           "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [5, 5, 30, 20], "area": 600, "iscrowd": 0},
                           {"id": 2, "image_id": 1, "category_id": 2, "bbox": [2, 10, 20, 30], "area": 600, "iscrowd": 0}],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    common = ["--device", "cpu", "--precision", "fp32", "--threshold", "0.05", "--project", str(tmp_path), "--no-progress"]
    for kind in ("gdino", "omdet"):
        model = str(tiny_grounded[kind])
        out = tmp_path / f"{kind}.json"
        assert main(["detect", str(images), "--classes", "cat,dog", "--model", model, "--json", str(out),
                     "--negatives", "zebra"] + common) == 0
        records = json.loads(out.read_text())
        assert len(records) == 2 and any(r["detections"] for r in records)
        assert {d["class_name"] for r in records for d in r["detections"]} <= {"cat", "dog"}
        metrics = tmp_path / f"{kind}-metrics.json"
        assert main(["eval", "--images", str(images), "--annotations", str(tmp_path / "ann.json"), "--model", model,
                     "--metrics-out", str(metrics)] + common) == 0
        assert "AP" in json.dumps(json.loads(metrics.read_text()))
        labelled = tmp_path / f"{kind}-label"
        assert main(["label", str(images), "--classes", "cat,dog", "--model", model, "--out", str(labelled)] + common) == 0
        assert (labelled / "report.json").is_file()


def test_hub_ids_and_folders_pick_the_family_preset(tiny_grounded):
    from ovdet.model_names import resolve_config

    for hub_id, backend in (("IDEA-Research/grounding-dino-base", "grounding"),
                            ("openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det", "grounding"),
                            ("omlab/omdet-turbo-swin-tiny-hf", "omdet")):
        cfg = resolve_config(hub_id)
        assert (cfg.backend, cfg.weights) == (backend, hub_id)
    assert resolve_config(str(tiny_grounded["mmgdino"])).backend == "grounding"


def test_a_class_longer_than_a_prompt_is_one_line(tiny_grounded):
    det = Detector.from_pretrained(tiny_grounded["gdino32"], device="cpu", precision="fp32", cache_text=False)
    with pytest.raises(VocabularyError, match="tokens long"):
        det.detect(photo(30, 40), ["cat", "a" * 40])
