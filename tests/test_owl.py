"""OWL backend on tiny checkpoints: equivalence with transformers, geometry, batching, caching."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

from ovdet import Detector

CLASSES = ["cat", "dog", "remote control", "a red bus"]
EXACT = dict(threshold=0.0, nms_iou=1.0, max_detections=100_000, templates="{}", device="cpu", precision="fp32")


def hf_reference(folder, image: Image.Image, classes):
    """transformers' own model + post_process_object_detection, boxes clipped to the image."""
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(folder).eval()
    inputs = processor(text=[classes], images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    res = processor.image_processor.post_process_object_detection(
        outputs, threshold=0.0, target_sizes=[(image.height, image.width)]
    )[0]
    order = torch.sort(res["scores"], descending=True, stable=True).indices
    boxes = res["boxes"][order].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    # ovdet drops boxes that clipping squashed to zero area (e.g. over OWLv2's padding)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep].numpy(), res["scores"][order][keep].numpy(), res["labels"][order][keep].numpy()


@pytest.fixture(scope="module")
def tall_image(astronaut_path):
    return Image.open(astronaut_path).crop((100, 0, 300, 512))  # 200 x 512: padded on the right


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
@pytest.mark.parametrize("which", ["chelsea", "astronaut", "tall"])
def test_matches_transformers_post_processing(tiny_models, kind, which, chelsea_path, astronaut_path, tall_image):
    image = {"chelsea": Image.open(chelsea_path), "astronaut": Image.open(astronaut_path), "tall": tall_image}[which]
    det = Detector.from_pretrained(str(tiny_models[kind]), **EXACT)
    ours = det.detect(image, CLASSES)
    boxes, scores, labels = hf_reference(str(tiny_models[kind]), image, CLASSES)
    assert len(ours) == len(scores) > 10
    np.testing.assert_allclose(ours.scores, scores, atol=1e-5)
    np.testing.assert_array_equal(ours.class_ids, labels)
    np.testing.assert_allclose(ours.xyxy, boxes, atol=1e-3)
    assert ours.image_size == (image.height, image.width)


def test_owlv2_boxes_are_relative_to_the_padded_square(tiny_owlv2, chelsea_path, monkeypatch):
    """A box OWLv2 predicts at normalised (0.25, 0.25, 0.5, 0.5) cxcywh lies in the padded
    square of side max(h, w) = 451, so in the 451 x 300 image it is [0, 0, 225.5, 225.5]."""
    det = Detector.from_pretrained(str(tiny_owlv2), **EXACT)
    real = det.backend.image_features

    def fixed_boxes(pixel_values):
        feats, boxes = real(pixel_values)
        boxes = torch.zeros_like(boxes)
        boxes[..., :] = torch.tensor([0.25, 0.25, 0.5, 0.5])
        return feats, boxes

    monkeypatch.setattr(det.backend, "image_features", fixed_boxes)
    dets = det.detect(chelsea_path, ["cat"])
    np.testing.assert_allclose(dets.xyxy[0], [0, 0, 225.5, 225.5], atol=1e-3)


def test_owlvit_boxes_are_relative_to_the_image(tiny_owlvit, chelsea_path, monkeypatch):
    det = Detector.from_pretrained(str(tiny_owlvit), **EXACT)
    real = det.backend.image_features

    def fixed_boxes(pixel_values):
        feats, boxes = real(pixel_values)
        return feats, torch.zeros_like(boxes) + torch.tensor([0.5, 0.5, 0.5, 0.5])

    monkeypatch.setattr(det.backend, "image_features", fixed_boxes)
    np.testing.assert_allclose(det.detect(chelsea_path, ["cat"]).xyxy[0], [112.75, 75, 338.25, 225], atol=1e-3)


def test_one_image_pass_per_image_whatever_the_number_of_classes(tiny_owlv2, chelsea_path, astronaut_path):
    det = Detector.from_pretrained(str(tiny_owlv2), **EXACT)
    model = det.backend.model
    calls = {"image": 0, "text": 0}
    image_embedder, text_encoder = model.image_embedder, det.backend.encode_text

    def count_image(*a, **k):
        calls["image"] += 1
        return image_embedder(*a, **k)

    def count_text(prompts):
        calls["text"] += 1
        return text_encoder(prompts)

    model.image_embedder = count_image
    det.backend.encode_text = count_text
    many = [f"thing number {i}" for i in range(60)]
    det.detect(chelsea_path, many)
    assert calls == {"image": 1, "text": 1}
    det.detect_batch([chelsea_path, astronaut_path] * 2 + [chelsea_path], many, batch_size=2)
    assert calls == {"image": 4, "text": 1}  # 5 images in batches of 2; vocabulary cached
    det.detect(chelsea_path, many[:-1])
    assert calls["text"] == 2  # a changed vocabulary is encoded again


def test_batched_equals_single_and_inputs_agree(tiny_owlv2, chelsea_path, astronaut_path, tall_image):
    det = Detector.from_pretrained(str(tiny_owlv2), threshold=0.3, device="cpu", precision="fp32")
    images = [chelsea_path, np.asarray(tall_image), Image.open(astronaut_path)]
    batched = det.detect_batch(images, CLASSES, batch_size=3)
    for image, b in zip(images, batched):
        single = det.detect(image, CLASSES)
        np.testing.assert_allclose(b.xyxy, single.xyxy, atol=1e-3)
        np.testing.assert_allclose(b.scores, single.scores, atol=1e-5)
    from_path = det.detect(str(chelsea_path), CLASSES)
    from_array = det.detect(np.asarray(Image.open(chelsea_path)), CLASSES)
    np.testing.assert_array_equal(from_path.xyxy, from_array.xyxy)


def test_invariants_and_raw_scores(tiny_owlv2, tall_image):
    det = Detector.from_pretrained(str(tiny_owlv2), threshold=0.2, nms_iou=0.5, device="cpu")
    dets = det.detect(tall_image, CLASSES)
    h, w = dets.image_size
    assert len(dets) > 0
    assert (dets.xyxy[:, 0::2] >= 0).all() and (dets.xyxy[:, 0::2] <= w).all()
    assert (dets.xyxy[:, 1::2] >= 0).all() and (dets.xyxy[:, 1::2] <= h).all()
    assert ((dets.scores > 0.2) & (dets.scores <= 1)).all()
    assert (dets.class_ids < len(CLASSES)).all()
    np.testing.assert_allclose(1 / (1 + np.exp(-dets.raw_scores)), dets.scores, atol=1e-6)
    # NMS applied: no two boxes of one class overlap above 0.5
    boxes = torch.from_numpy(dets.xyxy)
    iou = box_iou(boxes, boxes) - torch.eye(len(dets)) * 2
    same = torch.from_numpy(dets.class_ids[:, None] == dets.class_ids[None, :])
    assert (iou[same] <= 0.5 + 1e-6).all()
    # threshold and max_detections knobs
    assert len(det.detect(tall_image, CLASSES, threshold=0.99)) == 0
    assert len(Detector.from_pretrained(str(tiny_owlv2), threshold=0.0, max_detections=3).detect(tall_image, CLASSES)) == 3


def test_gray_rgba_and_16bit_images_run(tiny_owlv2, chelsea_path):
    det = Detector.from_pretrained(str(tiny_owlv2), threshold=0.0, max_detections=5)
    rgb = np.asarray(Image.open(chelsea_path))
    gray = rgb.mean(axis=2).astype(np.uint8)
    for image in (gray, np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), gray.astype(np.uint16) * 257):
        dets = det.detect(image, ["cat"])
        assert dets.image_size == rgb.shape[:2] and len(dets) == 5


def test_bf16_matches_fp32_on_top_detections(tiny_owlv2, chelsea_path):
    """Accuracy guard for the fast CPU mode: same top detections, IoU >= 0.95, |dscore| <= 0.02."""
    kw = dict(threshold=0.0, nms_iou=0.5, max_detections=10, device="cpu")
    ref = Detector.from_pretrained(str(tiny_owlv2), precision="fp32", **kw).detect(chelsea_path, CLASSES)
    fast = Detector.from_pretrained(str(tiny_owlv2), precision="bf16", **kw).detect(chelsea_path, CLASSES)
    assert fast.class_ids[:5].tolist() == ref.class_ids[:5].tolist()
    assert np.abs(fast.scores[:5] - ref.scores[:5]).max() <= 0.02
    # every box within 1.5 px; IoU >= 0.95 on object-sized boxes (IoU of a few-pixel sliver
    # clipped at the border swings with sub-pixel shifts, so it says nothing there). The
    # sliver's edge sits near 1 px: a 2e-6 change of the input pixels (OWLv2's blur done by
    # OpenCV instead of torchvision) moved it from 0.9 to 1.06 px.
    assert np.abs(fast.xyxy[:5] - ref.xyxy[:5]).max() <= 1.5
    sides = np.minimum(ref.xyxy[:5, 2] - ref.xyxy[:5, 0], ref.xyxy[:5, 3] - ref.xyxy[:5, 1])
    iou = box_iou(torch.from_numpy(fast.xyxy[:5]), torch.from_numpy(ref.xyxy[:5])).diagonal().numpy()
    assert (sides >= 20).sum() >= 3 and (iou[sides >= 20] >= 0.95).all()


def test_vocabulary_errors_surface_from_the_api(tiny_owlv2, chelsea_path):
    from ovdet.errors import VocabularyError

    det = Detector.from_pretrained(str(tiny_owlv2))
    for bad in ("", [], ["cat", " Cat "], ["cat", ""]):
        with pytest.raises(VocabularyError):
            det.detect(chelsea_path, bad)
    assert det.detect(chelsea_path, "cat, dog").class_names == ("cat", "dog")


def test_per_class_thresholds_from_yaml(tiny_owlv2, chelsea_path, tmp_path):
    (tmp_path / "thr.yaml").write_text("cat: 0.99\n")
    base = dict(threshold=0.0, nms_iou=1.0, max_detections=10_000, device="cpu", precision="fp32")
    plain = Detector.from_pretrained(str(tiny_owlv2), **base).detect(chelsea_path, ["cat", "dog"])
    strict = Detector.from_pretrained(str(tiny_owlv2), class_thresholds=str(tmp_path / "thr.yaml"), **base).detect(
        chelsea_path, ["cat", "dog"])
    assert (plain.class_ids == 0).sum() > 0
    assert (strict.class_ids == 0).sum() == (plain.scores[plain.class_ids == 0] > 0.99).sum()
    assert (strict.class_ids == 1).sum() == (plain.class_ids == 1).sum()  # other classes untouched
    (tmp_path / "case.yaml").write_text("CAT: 0.99\ndgo: 0.5\n")
    with pytest.warns(UserWarning, match="'dgo' is not in the vocabulary .did you mean 'dog'"):
        cased = Detector.from_pretrained(str(tiny_owlv2), class_thresholds=str(tmp_path / "case.yaml"), **base).detect(
            chelsea_path, ["cat", "dog"])
    np.testing.assert_array_equal(cased.class_ids, strict.class_ids)  # "CAT" applies to "cat"
    (tmp_path / "bad.yaml").write_text("cat: 2\n")
    from ovdet.errors import ConfigError

    with pytest.raises(ConfigError, match="must be a number in"):
        Detector.from_pretrained(str(tiny_owlv2), class_thresholds=str(tmp_path / "bad.yaml"))


def test_compiled_tower_gives_the_same_detections(tiny_owlv2, chelsea_path):
    kw = dict(threshold=0.0, nms_iou=0.5, max_detections=20, device="cpu", precision="fp32")
    ref = Detector.from_pretrained(str(tiny_owlv2), **kw).detect(chelsea_path, CLASSES)
    compiled = Detector.from_pretrained(str(tiny_owlv2), compile=True, **kw)
    assert type(compiled.backend.clip.vision_model).__name__ == "OptimizedModule"
    got = compiled.detect(chelsea_path, CLASSES)
    np.testing.assert_array_equal(got.class_ids, ref.class_ids)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)
    np.testing.assert_allclose(got.xyxy, ref.xyxy, atol=1e-2)


def test_owlv2_objectness_fusion_through_the_shared_scorer(tiny_owlv2, tiny_owlvit, chelsea_path):
    kw = dict(threshold=0.0, nms_iou=1.0, max_detections=100_000, device="cpu", precision="fp32")
    plain = Detector.from_pretrained(str(tiny_owlv2), **kw)
    fused = Detector.from_pretrained(str(tiny_owlv2), objectness_weight=0.5, **kw)
    image = [np.asarray(Image.open(chelsea_path))]
    embeds = plain.class_embeddings(tuple(CLASSES))
    native = plain.backend.predict(image, embeds)[0].scores
    both = fused.backend.predict(image, embeds)[0].scores
    backend = plain.backend
    feats, _ = backend.image_features(backend.preprocess(image))
    with torch.inference_mode():
        objectness = torch.sigmoid(backend.model.objectness_predictor(feats))[0]
    torch.testing.assert_close(both, (native * objectness[:, None]).sqrt(), atol=1e-6, rtol=1e-5)  # geometric mean
    with pytest.raises(Exception, match="objectness head"):
        Detector.from_pretrained(str(tiny_owlvit), objectness_weight=0.5)
