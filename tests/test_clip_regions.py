"""Proposer + CLIP region scoring on tiny checkpoints."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from ovdet import Detector
from ovdet.backends.clip_regions import pad_to_square, square_crops
from ovdet.errors import OvdetError, VocabularyError
from ovdet.proposers import WindowProposer, given_boxes
from ovdet.scoring import Scorer, drop_negatives

BOXES = [[10, 20, 120, 200], [0, 0, 451, 300], [300, 150, 451, 300], [200, 100, 230, 110]]


@pytest.fixture(scope="module")
def chelsea(chelsea_path):
    return np.asarray(Image.open(chelsea_path).convert("RGB"))


def boxes_detector(folder, **kw):
    args = dict(proposer="boxes", threshold=0.0, nms_iou=1.0, max_detections=1000, templates="{}", device="cpu",
                precision="fp32")
    return Detector.from_pretrained(str(folder), **{**args, **kw})


def test_crops_are_square_centred_and_padded(chelsea):
    crops = square_crops(chelsea, torch.tensor([[10.0, 20, 30, 60], [-20, -20, 20, 20]]), context=1.0)
    assert crops[0].shape == (40, 40, 3)
    np.testing.assert_array_equal(crops[0][:, 10:30], chelsea[20:60, 10:30])  # box in the middle
    assert crops[1].shape == (40, 40, 3)
    np.testing.assert_array_equal(crops[1][20:, 20:], chelsea[:20, :20])
    assert (crops[1][:20, :20] == np.array([122, 116, 104], np.uint8)).all()  # outside: CLIP mean
    assert square_crops(chelsea, torch.tensor([[0.0, 0, 100, 50]]), context=1.5)[0].shape == (150, 150, 3)


def test_batched_crop_similarities_equal_per_crop_clip(tiny_clip, chelsea):
    """The batched crop path gives the similarities transformers' CLIPModel gives each crop alone."""
    classes = ["cat", "remote control", "a sofa"]
    dets = boxes_detector(tiny_clip, crop_context=1.2)
    cands = dets.backend.predict([chelsea], dets.class_embeddings(tuple(classes)), [given_boxes(BOXES, 300, 451)])[0]

    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    processor = CLIPProcessor.from_pretrained(str(tiny_clip))
    with torch.no_grad():
        text = model.get_text_features(**processor.tokenizer(classes, padding=True, return_tensors="pt")).pooler_output
        text = F.normalize(text, dim=-1)
        for i, crop in enumerate(square_crops(chelsea, torch.tensor(BOXES, dtype=torch.float32), 1.2)):
            pixels = processor(images=Image.fromarray(crop), return_tensors="pt")["pixel_values"]
            image = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
            np.testing.assert_allclose(cands.raw[i].numpy(), (image @ text.T)[0].numpy(), atol=2e-5)


def test_template_ensemble_matches_hand_computation(tiny_clip):
    det = Detector.from_pretrained(str(tiny_clip), templates="photo", device="cpu", cache_text=False, precision="fp32")
    names = ("cat", "dog")
    got = det.class_embeddings(names)
    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    processor = CLIPProcessor.from_pretrained(str(tiny_clip))
    per_template = []
    with torch.no_grad():
        for template in det.templates:
            texts = [template.replace("{}", n) for n in names]
            feats = model.get_text_features(**processor.tokenizer(texts, padding=True, return_tensors="pt")).pooler_output
            per_template.append(F.normalize(feats, dim=-1))
    expected = F.normalize(torch.stack(per_template).mean(0), dim=-1)
    assert len(det.templates) > 5
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_text_batches_sorted_by_length_keep_each_prompts_embedding(tiny_clip, monkeypatch):
    import ovdet.clip
    from ovdet.clip import ClipModel

    clip = ClipModel.load(tiny_clip, torch.device("cpu"), torch.float32)
    texts = ["a photo of a cat.", "dog", "a long description of a red double decker bus in the rain", "x",
             "a photo of a traffic light."] * 3
    alone = torch.cat([clip.encode_text([t]) for t in texts])
    monkeypatch.setattr(ovdet.clip, "TEXT_BATCH", 4)  # several batches, each mixing lengths if unsorted
    torch.testing.assert_close(clip.encode_text(texts), alone, atol=1e-5, rtol=0)
    assert clip.encode_text([]).shape == (0, alone.shape[1])


def test_pooled_path_shapes_borders_and_degenerate_boxes(tiny_clip, chelsea):
    det = boxes_detector(tiny_clip, region_mode="pooled", dense_size=128)
    boxes = torch.tensor([[0, 0, 451, 300], [0, 0, 1, 1], [450, 299, 451, 300], [10, 10, 10.2, 10.2],
                          [-30, -30, 20, 20], [200, 100, 200, 100]], dtype=torch.float32)
    emb = det.backend.embed_pooled([chelsea], [boxes])[0]
    assert emb.shape == (6, det.backend.clip.model.config.projection_dim)
    assert torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(6))
    # several images in one dense pass, different sizes
    tall = np.ascontiguousarray(chelsea[:, :150])
    out = det.backend.embed_pooled([chelsea, tall], [boxes[:2], boxes[:3]])
    assert [len(o) for o in out] == [2, 3]
    torch.testing.assert_close(out[0], emb[:2], atol=1e-5, rtol=0)


def test_pooled_boxes_land_on_the_right_tokens(tiny_clip, monkeypatch):
    """Box -> token-grid mapping through the square padding: the pooled value of a token map
    holding each token's own x / y index is the box centre in token units (minus 0.5)."""
    det = boxes_detector(tiny_clip, region_mode="pooled", dense_size=128)
    backend = det.backend

    def index_tokens(pixel_values):
        g = 128 // backend.clip.patch_size  # 8 x 8 grid
        ys, xs = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij")
        return torch.stack([xs, ys])[None].expand(len(pixel_values), -1, -1, -1)

    monkeypatch.setattr(backend.clip, "dense_tokens", index_tokens)
    monkeypatch.setattr(backend.clip, "project_tokens", lambda t: t)
    image = np.zeros((128, 256, 3), np.uint8)  # padded to 256 x 256, resized to 128: 1 token = 32 px
    pooled = backend.embed_pooled([image], [torch.tensor([[64.0, 32, 128, 96]])])[0]
    torch.testing.assert_close(pooled[0], torch.tensor([96 / 32 - 0.5, 64 / 32 - 0.5]))


def test_negatives_remove_exactly_the_boxes_they_win(tiny_clip, chelsea):
    classes, negative = ["cat", "dog"], "a statue"
    det = boxes_detector(tiny_clip)
    windows = WindowProposer().windows(300, 451).tolist()
    sims = det.backend.predict([chelsea], det.class_embeddings(("cat", "dog", "a statue")),
                               [given_boxes(windows, 300, 451)])[0].raw
    negative_wins = (sims.argmax(dim=1) == 2).numpy()
    assert 0 < negative_wins.sum() < len(windows)  # the test needs both kinds of boxes
    plain = det.detect(chelsea, classes, boxes=windows)
    filtered = det.detect(chelsea, classes, boxes=windows, negatives=negative)
    expected = np.asarray(windows, np.float32)[~negative_wins]
    order = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_allclose(order(filtered.xyxy), order(expected), atol=1e-3)
    assert len(plain) == len(windows)
    with pytest.raises(VocabularyError, match="duplicate"):
        det.detect(chelsea, classes, boxes=windows, negatives="Cat")


def test_drop_negatives_and_scores_stay_in_unit_interval():
    scores = torch.tensor([[0.2, 0.5, 0.1], [0.6, 0.1, 0.3], [0.1, 0.1, 0.9]])
    out = drop_negatives(scores, 2)
    torch.testing.assert_close(out, torch.tensor([[0.2, 0.5], [0.6, 0.1], [0.0, 0.0]]))
    sims = torch.rand(500, 7) * 2 - 1  # cosines anywhere in [-1, 1]
    objectness = torch.rand(500)
    for mode in ("softmax", "sigmoid"):
        for w in (0.0, 0.5, 1.0):
            s = Scorer(mode=mode, logit_scale=100.0, objectness_weight=w)(sims, objectness)
            assert s.shape == (500, 7) and (s >= 0).all() and (s <= 1).all()
    soft = Scorer(mode="softmax", objectness_weight=0.0)(sims)
    assert (soft.sum(dim=1) <= 1 + 1e-5).all()
    # background entry: a region no closer to any class than the background gets < 1/2
    flat = Scorer(mode="softmax", background_similarity=0.3, objectness_weight=0.0)(torch.full((1, 2), 0.3))
    assert (flat < 0.5).all()


def test_text_cache_avoids_text_tower_and_invalidates(tiny_clip, tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("OVDET_CACHE", str(tmp_path / "cache"))
    calls = []

    def counting(det):
        encode = det.backend.encode_text
        det.backend.encode_text = lambda prompts: calls.append(len(prompts)) or encode(prompts)
        return det

    names = [f"class {i}" for i in range(30)]
    first = counting(Detector.from_pretrained(str(tiny_clip), templates="photo", precision="fp32"))
    a = first.class_embeddings(tuple(names))
    assert len(calls) == 1 and calls[0] == 30 * len(first.templates)
    second = counting(Detector.from_pretrained(str(tiny_clip), templates="photo", precision="fp32"))  # same disk
    torch.testing.assert_close(second.class_embeddings(tuple(names)), a)
    assert len(calls) == 1  # served from disk: no text-tower work
    second.class_embeddings(tuple(names[:-1] + ["another name"]))
    assert len(calls) == 2  # a changed name
    counting(Detector.from_pretrained(str(tiny_clip), templates="single")).class_embeddings(tuple(names))
    assert len(calls) == 3  # changed templates
    import shutil
    other = tmp_path_factory.mktemp("other") / "clip"
    shutil.copytree(tiny_clip, other)
    counting(Detector.from_pretrained(str(other), templates="photo")).class_embeddings(tuple(names))
    assert len(calls) == 4  # another model


def test_owlv2_objectness_proposals_feed_clip(tiny_clip, tiny_owlv2, chelsea):
    det = Detector.from_pretrained(str(tiny_clip), proposer="owlv2", proposer_weights=str(tiny_owlv2),
                                   proposals=12, threshold=0.0, nms_iou=1.0, device="cpu")
    props = det.backend.proposer.propose([chelsea])[0]
    assert len(props.boxes) == 12
    assert torch.all(props.objectness[:-1] >= props.objectness[1:])
    assert (props.boxes[:, 2] <= 451).all() and (props.boxes[:, 3] <= 300).all()
    assert ((props.objectness > 0) & (props.objectness <= 1)).all()
    dets = det.detect(chelsea, ["cat", "dog"])
    assert len(dets) == 12 and ((dets.scores >= 0) & (dets.scores <= 1)).all()


def test_windows_cover_the_image():
    boxes = WindowProposer().windows(300, 451)
    assert boxes[0].tolist() == [0, 0, 451, 300]
    assert (boxes[:, 0] >= -1e-4).all() and (boxes[:, 2] <= 451 + 1e-4).all() and (boxes[:, 3] <= 300 + 1e-4).all()
    assert 20 < len(boxes) < 400


@pytest.mark.parametrize(
    "boxes, message",
    [([[0, 0, 10]], "list of"), ([[10, 10, 5, 20]], "x2 <= x1"), ([[500, 10, 600, 20]], "outside"), ([["a", 1, 2, 3]], "list of")],
)
def test_malformed_boxes_are_user_errors(boxes, message):
    with pytest.raises(OvdetError, match=message):
        given_boxes(boxes, 300, 451)


def test_given_boxes_are_clipped_to_the_image():
    props = given_boxes([[-40, -40, 20, 20], [100, 100, 600, 400]], 300, 451)
    assert props.boxes.tolist() == [[0, 0, 20, 20], [100, 100, 451, 300]]


def test_boxes_only_preset_needs_boxes(tiny_clip, chelsea):
    with pytest.raises(OvdetError, match="given boxes only"):
        boxes_detector(tiny_clip).detect(chelsea, ["cat"])


def test_pad_to_square():
    out = pad_to_square(np.zeros((10, 30, 3), np.uint8))
    assert out.shape == (30, 30, 3) and (out[10:] == np.array([122, 116, 104])).all()


def test_bf16_region_similarities_track_fp32(tiny_clip, chelsea):
    classes = ("cat", "remote control", "a sofa")
    props = [given_boxes(BOXES, 300, 451)]
    sims = {}
    for precision in ("fp32", "bf16"):
        det = boxes_detector(tiny_clip, precision=precision)
        sims[precision] = det.backend.predict([chelsea], det.class_embeddings(classes), props)[0].raw
    assert (sims["bf16"] - sims["fp32"]).abs().max() < 0.02
