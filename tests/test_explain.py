"""Relevance maps (`ovdet.explain`, `ovdet explain`) on the tiny random CLIP.

Besides shapes and ranges, the saliency-literature sanity checks: the map depends on the text
and on the model's weights (model randomisation), and the gradient it is built from matches a
finite difference.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ovdet import cli
from ovdet.backends.clip_regions import pad_to_square, square_crops
from ovdet.clip import ClipModel
from ovdet.errors import ConfigError
from ovdet.explain import (
    Explainer, explain, gradcam_grid, normalise, overlay, square_geometry, upsample,
)
from ovdet.io import load_image
from ovdet.structures import Detections

METHODS = ("gradcam", "rollout")


def ovdet(monkeypatch, *args) -> int:
    """Run `ovdet ARGS` in-process."""
    return cli.main([str(a) for a in args])


def clip_from(folder, dtype=torch.float32, vision_seed=None) -> ClipModel:
    """The tiny CLIP; with `vision_seed`, its image tower re-initialised from that seed."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(folder))
    if vision_seed is not None:
        torch.manual_seed(vision_seed)
        fresh = CLIPModel(model.config)
        model.vision_model.load_state_dict(fresh.vision_model.state_dict())
        model.visual_projection.load_state_dict(fresh.visual_projection.state_dict())
    return ClipModel(model, CLIPProcessor.from_pretrained(str(folder)), torch.device("cpu"), dtype)


@pytest.fixture(scope="module")
def explainer(tiny_clip):
    return Explainer(clip_from(tiny_clip), templates=("{}",))


@pytest.fixture(scope="module")
def chelsea(chelsea_path):
    return load_image(chelsea_path)  # (300, 451, 3)


@pytest.mark.parametrize("method", METHODS)
def test_maps_have_the_image_shape_are_in_unit_range_and_deterministic(explainer, chelsea, method):
    tall = np.ascontiguousarray(chelsea.transpose(1, 0, 2)[:, :200])  # (451, 200): padding on the other side
    for image in (chelsea, tall):
        maps = explainer.explain_classes(image, ["cat", "rocket"], method)
        assert maps.shape == (2, *image.shape[:2]) and maps.dtype == np.float32
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
        assert np.allclose(maps.max(axis=(1, 2)), 1.0)  # min-max normalised over the image
        assert np.array_equal(maps, explainer.explain_classes(image, ["cat", "rocket"], method))
        # a one-class vocabulary pads its prompt differently in the text tower: equal to rounding
        assert np.allclose(maps[1], explainer.explain(image, "rocket", method), atol=1e-5)


def test_explain_function_loads_a_model_by_name(tiny_clip, explainer, chelsea_path):
    heat = explain(chelsea_path, "cat", model=tiny_clip, device="cpu", templates="none", cache_text=False)
    assert heat.shape == (300, 451)
    assert np.allclose(heat, explainer.explain(chelsea_path, "cat"), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_map_changes_when_the_text_changes(explainer, chelsea, method):
    cat, rocket = explainer.explain_classes(chelsea, ["cat", "rocket"], method)
    assert np.abs(cat - rocket).mean() > 0.02


@pytest.mark.parametrize("method", METHODS)
def test_model_randomisation_changes_the_map(tiny_clip, explainer, chelsea, method):
    randomised = Explainer(clip_from(tiny_clip, vision_seed=1), templates=("{}",))
    # only the image tower changed: the text side is identical
    assert torch.equal(randomised.text_embeddings(["cat"]), explainer.text_embeddings(["cat"]))
    before = explainer.explain(chelsea, "cat", method)
    after = randomised.explain(chelsea, "cat", method)
    assert np.abs(before - after).mean() > 0.05
    assert np.corrcoef(before.ravel(), after.ravel())[0, 1] < 0.8


def test_gradient_matches_finite_differences(tiny_clip, chelsea):
    """d similarity / d tokens from autograd vs central differences, in float64."""
    ex = Explainer(clip_from(tiny_clip, dtype=torch.float64), templates=("{}",))
    assert ex.dtype == torch.float64
    pixels = ex.pixels(pad_to_square(chelsea))
    text = ex.text_embeddings(["cat"])[0]
    tg = ex.token_gradients(pixels, text)
    n, d = tg.tokens.shape
    assert (n, d) == (ex.grid ** 2, ex.clip.model.config.vision_config.hidden_size)
    assert abs(tg.similarity - ex.token_gradients(pixels, text, torch.zeros(1, n + 1, d, dtype=torch.float64)).similarity) < 1e-12
    gen = torch.Generator().manual_seed(0)
    eps = 1e-5
    for patch in (0, 5, n - 1):
        direction = torch.zeros(1, n + 1, d, dtype=torch.float64)
        direction[0, 1 + patch] = torch.randn(d, generator=gen, dtype=torch.float64)
        plus = ex.token_gradients(pixels, text, eps * direction).similarity
        minus = ex.token_gradients(pixels, text, -eps * direction).similarity
        numeric = (plus - minus) / (2 * eps)
        analytic = float(tg.gradients[patch] @ direction[0, 1 + patch])
        assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-10)
    # all patches at once
    direction = torch.randn(1, n + 1, d, generator=gen, dtype=torch.float64)
    direction[0, 0] = 0
    numeric = (ex.token_gradients(pixels, text, eps * direction).similarity
               - ex.token_gradients(pixels, text, -eps * direction).similarity) / (2 * eps)
    assert numeric == pytest.approx(float((tg.gradients * direction[0, 1:]).sum()), rel=1e-6)


def test_gradcam_map_is_built_from_those_gradients(explainer, chelsea):
    pixels = explainer.pixels(pad_to_square(chelsea))
    text = explainer.text_embeddings(["cat"])
    tg = explainer.token_gradients(pixels, text[0])
    by_hand = torch.relu(tg.tokens @ tg.gradients.mean(dim=0)).reshape(tg.grid, tg.grid)
    grid = explainer.grid_maps(pixels, text, "gradcam")[0]
    assert torch.allclose(grid, by_hand, atol=1e-6)
    assert torch.allclose(gradcam_grid(tg.tokens, tg.gradients, tg.grid), by_hand, atol=1e-6)
    side = max(chelsea.shape[:2])
    expected = normalise(upsample(by_hand, side, 300, 451))
    assert np.allclose(explainer.explain(chelsea, "cat"), expected, atol=1e-5)


def test_tokens_leaving_the_last_block_get_no_gradient(explainer, chelsea):
    """Why Grad-CAM reads the tokens entering the last block's attention: CLIP pools the CLS
    token only, so the patch tokens the last block outputs never reach the embedding."""
    captured = {}
    layer = explainer.vision.encoder.layers[-1]
    hook = layer.register_forward_hook(lambda m, i, o: captured.update(out=o[0] if isinstance(o, tuple) else o))
    try:
        with torch.enable_grad():
            pixels = explainer.pixels(pad_to_square(chelsea)).requires_grad_(True)
            feats = explainer.clip.model.get_image_features(pixel_values=pixels).pooler_output
            sim = torch.nn.functional.normalize(feats, dim=-1)[0] @ explainer.text_embeddings(["cat"])[0]
            (grad,) = torch.autograd.grad(sim, captured["out"])
    finally:
        hook.remove()
    assert grad[0, 1:].abs().max() == 0 and grad[0, 0].abs().max() > 0
    tg = explainer.token_gradients(pixels.detach(), explainer.text_embeddings(["cat"])[0])
    assert tg.gradients.abs().max() > 0


def test_upsample_is_torch_bilinear_cropped():
    grid = torch.rand(7, 7, generator=torch.Generator().manual_seed(0))
    for side, h, w in ((451, 300, 451), (64, 64, 64), (5, 5, 3), (1000, 17, 1000)):
        full = torch.nn.functional.interpolate(grid[None, None], size=(side, side), mode="bilinear", align_corners=False)
        assert np.allclose(upsample(grid, side, h, w), full[0, 0, :h, :w].numpy(), atol=1e-6)
    assert upsample(grid, 20).shape == (20, 20)


@pytest.mark.parametrize("method", METHODS)
def test_box_maps_are_zero_outside_the_box(explainer, chelsea, method):
    boxes = [[100.4, 50.0, 300.0, 250.6], [400.0, -20.0, 480.0, 60.0]]  # the second leaves the image
    maps = explainer.explain_boxes(chelsea, boxes, ["cat", "rocket"], method)
    assert maps.shape == (2, 300, 451) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    inside = np.zeros((300, 451), bool)
    inside[50:251, 100:300] = True
    assert maps[0][~inside].max() == 0 and maps[0][inside].max() == pytest.approx(1.0)
    assert maps[1][60:].max() == 0 and maps[1][:, :400].max() == 0
    assert np.allclose(maps[0], explainer.explain_box(chelsea, boxes[0], "cat", method), atol=1e-5)
    dets = Detections(xyxy=boxes, scores=[0.9, 0.4], class_ids=[0, 1], class_names=("cat", "rocket"), image_size=(300, 451))
    assert np.array_equal(explainer.explain_detections(chelsea, dets, method), maps)
    assert explainer.explain_boxes(chelsea, [], []).shape == (0, 300, 451)


def test_square_geometry_is_where_square_crops_cuts(chelsea):
    for box in ([100.4, 50.0, 300.0, 250.6], [10.0, 20.0, 30.0, 200.0], [420.0, 250.0, 460.0, 320.0]):
        left, top, side = square_geometry(box)
        crop = square_crops(chelsea, torch.tensor([box]), context=1.0)[0]
        assert crop.shape == (side, side, 3)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + side, 300), min(left + side, 451)
        assert np.array_equal(crop[y0 - top : y1 - top, x0 - left : x1 - left], chelsea[y0:y1, x0:x1])


def test_low_precision_model_is_explained_in_fp32_without_touching_it(tiny_clip, chelsea):
    low = clip_from(tiny_clip, dtype=torch.bfloat16)
    ex = Explainer(low, templates=("{}",))
    assert ex.dtype == torch.float32 and next(ex.vision.parameters()).dtype == torch.float32
    assert next(low.model.vision_model.parameters()).dtype == torch.bfloat16
    heat = ex.explain(chelsea, "cat", "rollout")
    assert heat.shape == (300, 451) and np.isfinite(heat).all()


def test_non_clip_model_is_refused_clearly(tiny_owlv2):
    with pytest.raises(ConfigError, match="CLIP ResNets are not supported"):
        Explainer.from_pretrained(tiny_owlv2, device="cpu")


def test_overlay_is_an_rgb_image_of_the_same_size(explainer, chelsea):
    picture = overlay(chelsea, explainer.explain(chelsea, "cat"))
    assert picture.shape == chelsea.shape and picture.dtype == np.uint8


def test_cli_writes_class_and_detection_maps(monkeypatch, capsys, tiny_clip, tiny_owlv2, chelsea_path, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "maps"
    rc = ovdet(monkeypatch, "explain", chelsea_path, bad, "--classes", "cat,remote control", "--model", tiny_clip,
               "--detect-model", tiny_owlv2, "--threshold", "0.3", "--max-det", "2", "--method", "rollout",
               "--device", "cpu", "--out", out)
    captured = capsys.readouterr()
    assert rc == 1 and "skipping" in captured.err and str(bad) in captured.err  # broken image skipped
    index = json.loads((out / "index.json").read_text())
    classes = [e for e in index if e["kind"] == "class"]
    detections = [e for e in index if e["kind"] == "detection"]
    assert [e["class_name"] for e in classes] == ["cat", "remote control"]
    assert 1 <= len(detections) <= 2
    for entry in index:
        relevance = np.load(entry["map"])
        assert relevance.shape == (300, 451) and relevance.dtype == np.float32
        assert np.isfinite(relevance).all() and 0 <= relevance.min() and relevance.max() <= 1
        with Image.open(entry["overlay"]) as im:
            assert im.size == (451, 300) and im.mode == "RGB"
    for entry in detections:
        x1, y1, x2, y2 = entry["box"]
        relevance = np.load(entry["map"])
        outside = np.ones_like(relevance, bool)
        outside[int(np.floor(y1)) : int(np.ceil(y2)), int(np.floor(x1)) : int(np.ceil(x2))] = False
        assert relevance[outside].max(initial=0) == 0
    assert (out / "chelsea_remote_control.npy").is_file()


def test_cli_detections_from_json_and_errors(monkeypatch, capsys, tiny_clip, tiny_owlv2, chelsea_path, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image": "chelsea.jpg", "width": 451, "height": 300, "detections": [
        {"box": [100, 50, 300, 250], "score": 0.8, "class_id": 0, "class_name": "cat"}]}]))
    out = tmp_path / "maps"
    assert ovdet(monkeypatch, "explain", chelsea_path, "--classes", "cat", "--model", tiny_clip,
                 "--detections-from", results, "--device", "cpu", "--out", out) == 0
    assert np.load(out / "chelsea_det00_cat.npy")[:50].max() == 0
    capsys.readouterr()
    for args, needle in [
        (["--model", tiny_owlv2], "CLIP ResNets are not supported"),
        (["--model", tiny_clip, "--threshold", "0.2"], "--detect-model only"),
        (["--model", tiny_clip, "--detections-from", tmp_path / "none.json"], "cannot read detections file"),
        (["--model", tiny_clip, "--method", "lrp"], "invalid choice"),
    ]:
        assert ovdet(monkeypatch, "explain", chelsea_path, "--classes", "cat", *args) == 2
        lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert len(lines) == 1 and needle in lines[0], lines
