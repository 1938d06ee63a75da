"""Image exemplars: equivalence with transformers' image-guided detection, the query-token rule,
one target pass for mixed vocabularies, the exemplar cache, CLIP region embeddings, blending."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, CLIPModel, CLIPProcessor

from ovdet import Detector, Example
from ovdet.backends.clip_regions import square_crops
from ovdet.cache import ExemplarEmbeddingCache
from ovdet.errors import ExemplarError, VocabularyError
from ovdet.exemplars import blend, resolve_vocabulary

EXACT = dict(threshold=0.0, nms_iou=1.0, max_detections=100_000, templates="{}", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def square_exemplar(astronaut_path) -> Image.Image:
    return Image.open(astronaut_path).crop((150, 40, 350, 240))  # 200 x 200


@pytest.fixture(scope="module")
def target(chelsea_path) -> Image.Image:
    return Image.open(chelsea_path)  # 451 x 300: OWLv2 pads it


def image_guided_reference(folder, target: Image.Image, query: Image.Image):
    """transformers' `image_guided_detection`; scores = sigmoid of its logits, boxes through the
    processor's own scaling (OWLv2: relative to the padded square), clipped to the image."""
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(folder).eval()
    inputs = processor(images=target, query_images=query, return_tensors="pt")
    with torch.no_grad():
        out = model.image_guided_detection(**inputs)
    res = processor.image_processor.post_process_object_detection(
        SimpleNamespace(logits=out.logits, pred_boxes=out.target_pred_boxes), threshold=0.0,
        target_sizes=[(target.height, target.width)],
    )[0]
    order = torch.sort(res["scores"], descending=True, stable=True).indices
    boxes = res["boxes"][order].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, target.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, target.height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep].numpy(), res["scores"][order][keep].numpy()


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
@pytest.mark.parametrize("box", ["none", "covering"])
def test_whole_image_exemplar_matches_image_guided_detection(tiny_models, kind, box, square_exemplar, target):
    det = Detector.from_pretrained(str(tiny_models[kind]), **EXACT)
    given = None if box == "none" else (0, 0, square_exemplar.width, square_exemplar.height)
    ours = det.detect(target, [Example("thing", square_exemplar, given)])
    boxes, scores = image_guided_reference(str(tiny_models[kind]), target, square_exemplar)
    assert len(ours) == len(scores) > 10
    np.testing.assert_allclose(ours.scores, scores, atol=1e-5)
    np.testing.assert_allclose(ours.xyxy, boxes, atol=1e-3)
    assert ours.class_names == ("thing",) and (ours.class_ids == 0).all()


def direct_rule(boxes_cxcywh: torch.Tensor, class_embeds: torch.Tensor, query) -> int:
    """The rule written out token by token: IoU (GIoU if no overlap) with the query; keep those
    within 80 % of the best (20 % of |best| below it); least similar to the mean embedding."""
    def iou_and_giou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
        return inter / union, inter / union - (hull - union) / hull

    preds = [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] for cx, cy, w, h in boxes_cxcywh.tolist()]
    pairs = [iou_and_giou(list(query), p) for p in preds]
    values = [iou for iou, _ in pairs]
    if max(values) == 0.0:
        values = [giou for _, giou in pairs]
    best = max(values)
    kept = [i for i, v in enumerate(values) if v >= best - 0.2 * abs(best) - 1e-7]
    mean = class_embeds.double().mean(dim=0)
    sims = {i: float(class_embeds[i].double() @ mean) for i in kept}
    return min(sims, key=sims.get)


@torch.inference_mode()
def exemplar_internals(det, image: np.ndarray):
    """(P, 4) predicted cxcywh boxes and (P, D) raw class embeddings of an exemplar image."""
    backend = det.backend
    feats, boxes = backend.image_features(backend.preprocess([image]))
    _, class_embeds = backend.model.class_predictor(feats)
    return boxes[0], class_embeds[0].float()


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_query_token_follows_the_rule_with_a_box(tiny_models, kind, astronaut_path, monkeypatch):
    det = Detector.from_pretrained(str(tiny_models[kind]), **EXACT)
    image = np.asarray(Image.open(astronaut_path).crop((0, 0, 300, 200)))  # wide: OWLv2 pads below
    boxes, class_embeds = exemplar_internals(det, image)
    given = [(60.0, 20.0, 180.0, 150.0), (60.0, 120.0, 180.0, 195.0), (200.0, 100.0, 290.0, 190.0)]
    got = det.backend.embed_exemplars([image] * len(given), given)
    moved = 0
    for (x1, y1, x2, y2), embed in zip(given, got):
        # OWLv2 boxes live in the padded square (side 300), OWL-ViT's in the stretched image
        padded = [x1 / 300, y1 / 300, x2 / 300, y2 / 300]
        stretched = [x1 / 300, y1 / 200, x2 / 300, y2 / 200]
        index = direct_rule(boxes, class_embeds, padded if kind == "owlv2" else stretched)
        torch.testing.assert_close(embed, F.normalize(class_embeds[index], dim=-1))
        moved += direct_rule(boxes, class_embeds, stretched if kind == "owlv2" else padded) != index
    assert moved  # the other frame would pick other tokens: the frame is what is tested


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_query_token_falls_back_to_generalised_iou(tiny_models, kind, astronaut_path, monkeypatch):
    """No predicted box overlaps the query: the GIoU ranking decides (forced with fixed boxes)."""
    det = Detector.from_pretrained(str(tiny_models[kind]), **EXACT)
    image = np.asarray(Image.open(astronaut_path).crop((0, 0, 300, 200)))
    real = det.backend.image_features
    fixed = {}

    def small_boxes_on_the_left(pixel_values):
        feats, boxes = real(pixel_values)
        p = boxes.shape[1]
        g = torch.Generator().manual_seed(1)
        cx = torch.rand(p, generator=g) * 0.3 + 0.05  # x in [0.05, 0.35], tiny boxes
        cy = torch.rand(p, generator=g) * 0.3 + 0.05
        new = torch.stack([cx, cy, torch.full((p,), 0.04), torch.full((p,), 0.04)], dim=-1)[None].expand_as(boxes)
        fixed["boxes"] = new[0].clone()
        return feats, new.clone()

    monkeypatch.setattr(det.backend, "image_features", small_boxes_on_the_left)
    box = (240.0, 150.0, 290.0, 190.0)  # bottom right: overlaps none of them
    got = det.backend.embed_exemplars([image], [box])[0]
    _, class_embeds = exemplar_internals(det, image)
    query = [240 / 300, 150 / 300, 290 / 300, 190 / 300] if kind == "owlv2" else [0.8, 0.75, 290 / 300, 0.95]
    index = direct_rule(fixed["boxes"], class_embeds, query)
    torch.testing.assert_close(got, F.normalize(class_embeds[index], dim=-1))
    # the fallback kept more than one token here, so the mean-similarity step mattered
    from torchvision.ops import generalized_box_iou
    from ovdet.boxes import cxcywh_to_xyxy

    giou = generalized_box_iou(torch.tensor([query]), cxcywh_to_xyxy(fixed["boxes"]))[0]
    assert (giou >= giou.max() - 0.2 * giou.max().abs()).sum() > 1


def count_tower(det):
    """Wrap the OWL image tower: returns a list that collects the batch size of every pass."""
    calls = []
    real = det.backend.model.image_embedder

    def counted(pixel_values, *a, **k):
        calls.append(pixel_values.shape[0])
        return real(pixel_values, *a, **k)

    det.backend.model.image_embedder = counted
    return calls


def test_mixed_vocabulary_runs_the_target_once(tiny_owlv2, square_exemplar, target, tmp_path):
    det = Detector.from_pretrained(str(tiny_owlv2), **EXACT, multi_label=True)
    det.exemplars.cache = ExemplarEmbeddingCache(tmp_path)
    calls = count_tower(det)
    vocab = ["cat", Example("thing", square_exemplar, (10, 10, 120, 150))]
    dets = det.detect(target, vocab)
    assert calls == [1, 1]  # the exemplar (cold cache), then the target: one pass each
    assert set(dets.class_ids.tolist()) == {0, 1} and dets.class_names == ("cat", "thing")
    calls.clear()
    again = det.detect_batch([target, target], vocab)
    assert calls == [2]  # exemplar cached: only the targets, in one batch
    np.testing.assert_allclose(again[0].scores, dets.scores, atol=1e-6)
    # the text class scores exactly as in a text-only vocabulary
    text_only = det.detect(target, ["cat"])
    np.testing.assert_allclose(dets[dets.class_ids == 0].scores, text_only.scores, atol=1e-6)


def test_exemplar_cache_on_disk(tiny_models, square_exemplar, target, tmp_path):
    cache = ExemplarEmbeddingCache(tmp_path)
    first = Detector.from_pretrained(str(tiny_models["owlv2"]), **EXACT)
    first.exemplars.cache = cache
    ex = Example("thing", square_exemplar, (10, 10, 120, 150))
    embeds = first.class_embeddings([ex])
    assert len(list(cache.directory.glob("*.npy"))) == 1

    second = Detector.from_pretrained(str(tiny_models["owlv2"]), **EXACT)  # new process memory
    second.exemplars.cache = cache
    calls = count_tower(second)
    # same pixels given as an array and as another Example object: found on disk, no tower work
    torch.testing.assert_close(second.class_embeddings([Example("x", np.asarray(square_exemplar), ex.box)]), embeds)
    assert calls == []
    second.class_embeddings([Example("x", square_exemplar, (20, 10, 120, 150))])  # another box
    assert calls == [1]
    assert len(list(cache.directory.glob("*.npy"))) == 2

    other = Detector.from_pretrained(str(tiny_models["owlvit"]), **EXACT)  # another model
    other.exemplars.cache = cache
    calls = count_tower(other)
    other.class_embeddings([ex])
    assert calls == [1] and len(list(cache.directory.glob("*.npy"))) == 3


def test_clip_exemplar_is_clip_image_embedding_of_the_crop(tiny_clip, astronaut_path):
    det = Detector.from_pretrained(str(tiny_clip), **{**EXACT, "templates": "{}"})
    image = np.asarray(Image.open(astronaut_path))
    box = (100.0, 50.0, 260.0, 300.0)
    got = det.class_embeddings([Example("face", image, box)])[0]
    crop = square_crops(image, torch.tensor([box]), det.backend.crop_context)[0]
    processor = CLIPProcessor.from_pretrained(str(tiny_clip))
    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    size = model.config.vision_config.image_size
    pixels = processor.image_processor(images=Image.fromarray(crop), size={"height": size, "width": size},
                                       do_center_crop=False, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=pixels)
    ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
    torch.testing.assert_close(got, F.normalize(ref[0], dim=-1), atol=2e-5, rtol=1e-4)


def test_several_examples_and_blending(tiny_owlv2, square_exemplar, target):
    det = Detector.from_pretrained(str(tiny_owlv2), **EXACT)
    a = Example("thing", square_exemplar, (10, 10, 120, 150))
    b = Example("Thing", np.asarray(square_exemplar)[::-1], (30, 30, 190, 190))
    one = det.class_embeddings([a])[0]
    two = det.class_embeddings([b])[0]
    merged = det.class_embeddings([a, b])
    assert merged.shape[0] == 1
    torch.testing.assert_close(merged[0], F.normalize(one + two, dim=-1))
    text = det.class_embeddings(["thing"])[0]
    for weight in (0.0, 0.3, 1.0):
        w = Detector(det.backend, det.config.replace(example_weight=weight))
        got = w.class_embeddings(["thing", a])
        assert got.shape[0] == 1
        torch.testing.assert_close(got[0], F.normalize((1 - weight) * text + weight * one, dim=-1))
    dets = det.detect(target, ["thing", a, "dog"], negatives="toy")
    assert dets.class_names == ("thing", "dog")


def test_resolve_vocabulary_rules(square_exemplar):
    ex = Example(" logo ", square_exemplar)
    vocab = resolve_vocabulary(["cat", ex, "LOGO", Example("logo", square_exemplar, (1, 1, 5, 5))])
    assert vocab.names == ("cat", "logo") and vocab.text == (True, True)
    assert [len(g) for g in vocab.examples] == [0, 2]
    with pytest.raises(VocabularyError):
        resolve_vocabulary(["cat", "Cat", ex])
    with pytest.raises(VocabularyError):
        resolve_vocabulary([])
    assert resolve_vocabulary([ex]).text == (False,)


def test_exemplar_errors(square_exemplar, tmp_path):
    with pytest.raises(ExemplarError, match="empty box"):
        Example("x", square_exemplar, (10, 10, 10, 50))
    with pytest.raises(ExemplarError, match="outside the exemplar image"):
        Example("x", square_exemplar, (150, 150, 260, 190)).identity()
    with pytest.raises(ExemplarError, match="cannot read"):
        Example("x", tmp_path / "missing.png").identity()
    with pytest.raises(ExemplarError, match="must be 4 numbers"):
        Example("x", square_exemplar, (1, 2, 3))
    # a box that covers the image is the whole image (same key as no box)
    assert Example("x", square_exemplar, (0, 0, 200, 200)).identity() == Example("x", square_exemplar).identity()


def test_yolo_world_refuses_exemplars(square_exemplar):
    from ovdet.backends.yolo import YoloWorldBackend

    assert not hasattr(YoloWorldBackend, "embed_exemplars")  # its head reads text embeddings only

    class TextOnly:  # a backend without embed_exemplars, as YOLO-World's
        device = torch.device("cpu")
        identity = "text-only"

        def encode_text(self, prompts):
            return torch.ones(len(prompts), 4)

    from ovdet.config import load_config

    det = Detector(TextOnly(), load_config({"backend": "yolo_world"}), text_cache=None)
    with pytest.raises(ExemplarError, match="cannot take image exemplars"):
        det.detect(np.zeros((32, 32, 3), np.uint8), ["cat", Example("x", square_exemplar)])
