"""Sliced inference: tile grid, geometry with a stub backend, merging, batching, and the
untiled result when one tile covers the image."""

import math

import numpy as np
import pytest
import torch

from ovdet import Detector, DetectorConfig
from ovdet.backends.base import RegionScores
from ovdet.cli.app import build_parser
from ovdet.kit.options import config_overrides
from ovdet.errors import ConfigError
from ovdet.merging import merge_passes, overlap
from ovdet.tiling import tile_windows


def coord_image(h, w):
    """Pixels that encode their own coordinates, so a stub backend knows where a tile lies."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x & 255, y & 255, ((x >> 8) << 4) | (y >> 8)], -1).astype(np.uint8)


class StubBackend:
    """Reports known objects (image pixels) clipped to each tile it is given, in tile pixels.

    A whole object scores `score`; a part cut by the tile scores `cut_score` (higher, to check
    that cut parts never beat the whole object)."""

    device = torch.device("cpu")
    identity = "stub"

    def __init__(self, objects, cut_score=0.95):
        self.objects = objects  # [(x1, y1, x2, y2, class_id, score)]
        self.cut_score = cut_score
        self.calls = []

    def encode_text(self, prompts):
        return torch.zeros(len(prompts), 4)

    def predict(self, images, class_embeds, boxes=None):
        self.calls.append(len(images))
        out = []
        for im in images:
            px = im[0, 0].astype(int)
            x0, y0 = px[0] + ((px[2] >> 4) << 8), px[1] + ((px[2] & 15) << 8)
            h, w = im.shape[:2]
            rows, scores = [], []
            for x1, y1, x2, y2, cls, score in self.objects:
                c = [max(x1, x0), max(y1, y0), min(x2, x0 + w), min(y2, y0 + h)]
                if c[2] - c[0] < 1 or c[3] - c[1] < 1:
                    continue
                whole = c == [x1, y1, x2, y2]
                rows.append([c[0] - x0, c[1] - y0, c[2] - x0, c[3] - y0])
                s = torch.zeros(len(class_embeds))
                s[cls] = score if whole else self.cut_score
                scores.append(s)
            boxes_t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
            scores_t = torch.stack(scores) if scores else torch.zeros(0, len(class_embeds))
            out.append(RegionScores(boxes=boxes_t, scores=scores_t, raw=scores_t.clone(), image_size=(h, w)))
        return out


def stub_detector(objects, **cfg):
    settings = dict(threshold=0.1, cache_text=False, max_detections=1000, tile=256, tile_overlap=0.25)
    settings.update(cfg)
    return Detector(StubBackend(objects), DetectorConfig(**settings))


def as_set(dets):
    return sorted((tuple(np.round(b, 2).tolist()), int(c)) for b, c in zip(dets.xyxy, dets.class_ids))


# -- grid ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw, tile, overlap", [((700, 1500), 256, 0.25), ((300, 1000), 512, 0.2), ((1000, 1000), 100, 0.0),
                                               ((513, 257), 256, 0.5)])
def test_tiles_cover_the_image_and_stay_inside_it(hw, tile, overlap):
    h, w = hw
    win = tile_windows(h, w, tile, overlap)
    assert (win[:, :2] >= 0).all() and (win[:, 2] <= w).all() and (win[:, 3] <= h).all()
    sizes = {(int(b[3] - b[1]), int(b[2] - b[0])) for b in win}
    assert sizes == {(min(tile, h), min(tile, w))}  # every tile the same size
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in win:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = np.unique(win[:, 0])
    if len(xs) > 2:  # neighbours share round(tile * overlap) px (the last column shifted back)
        assert xs[1] - xs[0] == tile - round(tile * overlap)


# -- geometry and merging with known boxes ------------------------------------------------------
OBJECTS = [
    (10, 10, 60, 50, 0, 0.9),       # inside the first tile only
    (200, 30, 240, 80, 1, 0.8),     # in the overlap of tiles 0 and 1 (x 192..256): seen whole twice
    (230, 100, 300, 140, 0, 0.7),   # cut by tile 0's right edge (256), whole in tile 1
    (1440, 600, 1500, 700, 1, 0.6),  # on the right and bottom image borders
    (700, 380, 760, 420, 0, 0.5),   # cut by a horizontal inner edge, whole in the next row
]


@pytest.mark.parametrize("merge", ["nmm", "nms"])
def test_boxes_land_at_their_original_pixels_once(merge):
    """Non-square 700 x 1500 image, 256 px tiles with 25 % overlap: every object comes out once,
    at its own pixels, whole, with the whole object's score (the cut parts score higher)."""
    det = stub_detector(OBJECTS, tile_merge=merge)
    dets = det.detect(coord_image(700, 1500), ["a", "b"])
    assert as_set(dets) == sorted(((float(x1), float(y1), float(x2), float(y2)), c) for x1, y1, x2, y2, c, _ in OBJECTS)
    by_box = {tuple(b.tolist()): s for b, s in zip(dets.xyxy, dets.scores)}
    for x1, y1, x2, y2, _, score in OBJECTS:
        assert by_box[(x1, y1, x2, y2)] == pytest.approx(score)
    assert dets.image_size == (700, 1500)
    assert list(dets.scores) == sorted(dets.scores, reverse=True)


def test_without_merging_the_overlaps_duplicate():
    """The same run with merging turned off (overlap threshold 1) reports the duplicates the
    merge removes: the test above is not passing by accident."""
    dets = stub_detector(OBJECTS, tile_merge_iou=1.0).detect(coord_image(700, 1500), ["a", "b"])
    assert len(dets) > len(OBJECTS)


def test_an_object_spanning_two_tiles_comes_out_once():
    """No tile sees the object (x 150..350) whole: greedy merging joins the two cut parts into
    it; with the whole-image pass, the whole object is reported."""
    big = [(150, 20, 350, 120, 0, 0.8)]
    image = coord_image(256, 600)
    nmm = stub_detector(big, tile_overlap=0.5).detect(image, ["a"])
    assert as_set(nmm) == [((150.0, 20.0, 350.0, 120.0), 0)]
    full = stub_detector(big, tile_full_image=True, tile_merge="nms").detect(image, ["a"])
    assert as_set(full) == [((150.0, 20.0, 350.0, 120.0), 0)]
    assert full.scores[0] == pytest.approx(0.8)  # the whole object's, not a cut part's 0.95


def test_different_classes_are_not_merged_unless_class_agnostic():
    objects = [(200, 30, 240, 80, 0, 0.8), (201, 31, 240, 80, 1, 0.7)]
    image = coord_image(256, 600)
    assert len(stub_detector(objects).detect(image, ["a", "b"])) == 2
    assert len(stub_detector(objects, class_agnostic_nms=True).detect(image, ["a", "b"])) == 1
    # the two classes of the same tile are the detector's own NMS's to judge (here: off)
    assert len(stub_detector(objects, class_agnostic_nms=True, nms_iou=1.0).detect(image, ["a", "b"])) == 2


# -- batching -----------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 3, 4, 64])
@pytest.mark.parametrize("full_image", [False, True])
def test_forward_passes_are_ceil_tiles_over_batch_size(batch_size, full_image):
    det = stub_detector(OBJECTS, batch_size=batch_size, tile_full_image=full_image)
    tiles = len(tile_windows(700, 1500, 256, 0.25)) + (1 if full_image else 0)
    det.detect(coord_image(700, 1500), ["a", "b"])
    assert len(det.backend.calls) == math.ceil(tiles / batch_size)
    assert sum(det.backend.calls) == tiles and max(det.backend.calls) <= batch_size


# -- real model: one tile is the untiled result ---------------------------------------------------
@pytest.mark.parametrize("hw", [(512, 512), (300, 451), (512, 200)])
def test_a_tile_at_least_as_large_as_the_image_gives_exactly_the_untiled_result(tiny_owlv2, astronaut_path, hw):
    from PIL import Image

    image = np.asarray(Image.open(astronaut_path).convert("RGB"))[: hw[0], : hw[1]]
    kw = dict(device="cpu", threshold=0.05, cache_text=False)
    plain = Detector.from_pretrained(str(tiny_owlv2), **kw).detect(image, ["cat", "dog"])
    for tile in (max(hw), 2 * max(hw)):
        tiled = Detector.from_pretrained(str(tiny_owlv2), tile=tile, **kw).detect(image, ["cat", "dog"])
        np.testing.assert_array_equal(tiled.xyxy, plain.xyxy)
        np.testing.assert_array_equal(tiled.scores, plain.scores)
        np.testing.assert_array_equal(tiled.class_ids, plain.class_ids)
    assert len(plain) > 0


def test_real_model_tiled_boxes_are_inside_the_image(tiny_owlv2, astronaut_path):
    det = Detector.from_pretrained(str(tiny_owlv2), device="cpu", threshold=0.1, cache_text=False, tile=200,
                                   batch_size=4, tile_full_image=True)
    dets = det.detect(astronaut_path, ["cat", "dog"])
    assert len(dets) > 0 and dets.image_size == (512, 512)
    assert (dets.xyxy >= 0).all() and (dets.xyxy[:, 2:] <= 512).all()


# -- merging primitives -------------------------------------------------------------------------
def test_overlap_metrics():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 10, 10], [20, 20, 30, 30]])
    torch.testing.assert_close(overlap(a, b, "iou"), torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(overlap(a, b, "ios"), torch.tensor([[1.0, 0.0]]))


def test_same_pass_pairs_are_never_merged_and_nmm_takes_the_union():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 10, 10], [4, 0, 14, 10]], np.float32)
    windows = np.array([[0, 0, 12, 12], [2, 0, 20, 12]])
    m = merge_passes(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, int), np.array([0, 0, 1]), np.zeros(3, bool),
                     windows, method="nmm", metric="iou", threshold=0.3)
    # 0 and 1 share a pass (the detector's own NMS kept both): both stay; 0 absorbs 2
    assert m.keep.tolist() == [0, 1]
    np.testing.assert_array_equal(m.xyxy[0], [0, 0, 14, 10])
    m = merge_passes(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, int), np.array([0, 0, 1]), np.array([1, 0, 0], bool),
                     windows, method="nms", metric="iou", threshold=0.3)
    assert m.keep.tolist() == [1, 0]  # 0 touches an inner edge: ranked after 1, then 1 suppresses 2


# -- configuration and flags --------------------------------------------------------------------
def test_flags_reach_the_config_on_every_detector_command():
    for command in (["detect", "x.jpg", "--classes", "a"], ["video", "v.mp4", "--classes", "a"],
                    ["eval", "--images", "d", "--annotations", "a.json"]):
        args = build_parser().parse_args(command + ["--tile", "640", "--tile-overlap", "0.3", "--tile-full-image",
                                                    "--tile-merge", "nms", "--tile-merge-iou", "0.4",
                                                    "--tile-merge-metric", "iou", "--max-pixels", "1000"])
        over = config_overrides(args)
        assert {k: over[k] for k in over if k.startswith(("tile", "max_pixels"))} == dict(
            tile=640, tile_overlap=0.3, tile_full_image=True, tile_merge="nms", tile_merge_iou=0.4,
            tile_merge_metric="iou", max_pixels=1000)


@pytest.mark.parametrize("bad", [dict(tile=8), dict(tile_overlap=0.95), dict(tile_merge="wbf"),
                                 dict(tile_merge_metric="giou"), dict(tile_merge_iou=0.0), dict(max_pixels=0)])
def test_bad_tile_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        DetectorConfig(**bad)


def test_given_boxes_and_tiling_do_not_mix():
    from ovdet.errors import OvdetError

    with pytest.raises(OvdetError, match="tiling"):
        stub_detector(OBJECTS).detect(coord_image(300, 300), ["a"], boxes=[[0, 0, 5, 5]])
