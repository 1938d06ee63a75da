"""The SAM 2 / SAM masker: masks equal transformers' models called directly (tiny checkpoints
saved and loaded back through `--masks`), one image pass per image, the region-restricted
upsampling equal to the processor's, RLE through pycocotools, the Detector's paths (batch,
two-phase, tiles) and `ovdet detect --json` with masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_models
from ovdet import Detector, Masks
from ovdet.backends.mask_upsample import resize_window, upsample_masks, upsample_to_crop
from ovdet.backends.sam_masker import SamMasker, locate_masker
from ovdet.errors import WeightsNotFoundError

CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def tiny_sams(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("tiny-sam")
    return {kind: make_tiny_models.make_sam(kind, base / kind) for kind in ("sam2", "sam")}


def reference(kind: str, folder, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: transformers' model and processor called directly, as their docs do."""
    from transformers import Sam2Model, Sam2Processor, SamModel, SamProcessor

    model_class, processor_class = (Sam2Model, Sam2Processor) if kind == "sam2" else (SamModel, SamProcessor)
    model, processor = model_class.from_pretrained(folder).eval(), processor_class.from_pretrained(folder)
    inputs = processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, multimask_output=False)
    sizes = [inputs["original_sizes"]] + ([inputs["reshaped_input_sizes"]] if kind == "sam" else [])
    return processor.post_process_masks(out.pred_masks, *sizes)[0][:, 0].numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


@pytest.mark.parametrize("kind", ["sam2", "sam"])
@pytest.mark.parametrize("size", [(90, 150), (160, 70)])
def test_masks_equal_transformers_called_directly(tiny_sams, kind, size):
    """Non-square images, boxes touching every border and the whole image; fp32."""
    h, w = size
    image = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    boxes = np.asarray([[0, 0, w * 0.4, h * 0.5], [w * 0.6, h * 0.3, w, h], [0, 0, w, h],
                        [w * 0.2, h * 0.1, w * 0.9, h * 0.8], [w - 9, 0, w, 9]], np.float32)
    masker = SamMasker.load(str(tiny_sams[kind]), CPU, torch.float32)  # the path --masks FOLDER takes
    masks = masker(image, boxes)
    expected = reference(kind, tiny_sams[kind], image, boxes)
    assert len(masks) == len(boxes) and masks.image_size == (h, w)
    dense = masks.to_dense()
    assert expected.any() and (~expected).any()  # random weights, but not a trivial answer
    assert all(iou(d, e) >= 0.99 for d, e in zip(dense, expected))
    assert np.array_equal(dense, expected)  # in fact pixel for pixel


@pytest.mark.parametrize("kind", ["sam2", "sam"])
def test_one_image_pass_per_image_whatever_the_boxes(tiny_sams, kind, monkeypatch):
    masker = SamMasker.load(str(tiny_sams[kind]), CPU)
    calls = []
    encoder = masker.model.get_image_embeddings
    monkeypatch.setattr(masker.model, "get_image_embeddings", lambda *a, **k: calls.append(1) or encoder(*a, **k))
    image = np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    for n in (1, 40):
        xy = rng.uniform(0, 60, (n, 2))
        before = masker.prompt_batches
        masks = masker(image, np.concatenate([xy, xy + rng.uniform(5, 60, (n, 2))], 1))
        assert len(masks) == n and masker.prompt_batches - before == 1  # all boxes in one decoder call
    assert len(calls) == masker.image_passes == 2
    assert len(masker(image, np.zeros((0, 4)))) == 0 and len(calls) == 2  # no boxes: no pass


@pytest.mark.parametrize("in_size,out_size", [((256, 256), (2100, 1500)), ((256, 256), (640, 480)),
                                              ((600, 1024), (720, 1280)), ((32, 32), (90, 150))])
def test_resize_window_is_pytorchs_bilinear_bit_for_bit(in_size, out_size):
    logits = torch.randn(1, 1, *in_size, generator=torch.Generator().manual_seed(0))
    full = F.interpolate(logits, out_size, mode="bilinear", align_corners=False)[0, 0].numpy()
    H, W = out_size
    assert np.array_equal(resize_window(logits[0, 0].numpy(), out_size, 0, H, np.arange(W)), full)
    cols = np.flatnonzero(np.random.default_rng(0).random(W) < 0.3)
    assert np.array_equal(resize_window(logits[0, 0].numpy(), out_size, 7, H // 2, cols), full[7:H // 2, cols])


def test_region_upsampling_equals_the_processors_post_processing():
    """Blobs of positive logits (as SAM gives) through Sam2Processor.post_process_masks and
    through the region-restricted path, both the direct (small image) and the region one."""
    from transformers import Sam2ImageProcessor

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    logits = []
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 256), rng.uniform(0, 256), rng.uniform(3, 90)
        logits.append((r - np.hypot(yy - cy, xx - cx)) / 10 + rng.normal(0, 0.3, (256, 256)))
    logits.append(np.full((256, 256), -1.0))  # an empty mask
    low = torch.as_tensor(np.stack(logits), dtype=torch.float32)
    for size in [(300, 517), (1999, 2203)]:  # under and over DIRECT_PIXELS: both ways
        expected = Sam2ImageProcessor().post_process_masks([low[:, None].clone()], [size])[0][:, 0].numpy()
        crops = upsample_masks(low, size)
        got = Masks.from_crops([c for c, _, _ in crops], [(y, x) for _, y, x in crops], size).to_dense()
        assert np.array_equal(got, expected)
        region = [upsample_to_crop(v.numpy(), size) for v in low]
        assert np.array_equal(Masks.from_crops([c for c, _, _ in region], [(y, x) for _, y, x in region], size).to_dense(),
                              expected)
    assert region[-1][0].shape == (0, 0)


def test_rle_round_trips_through_pycocotools(tiny_sams):
    from pycocotools import mask as mask_utils

    image = np.random.default_rng(3).integers(0, 256, (75, 131, 3), dtype=np.uint8)
    masks = SamMasker.load(str(tiny_sams["sam2"]), CPU)(image, np.asarray([[0, 0, 60, 40], [30, 20, 131, 75]]))
    dense = masks.to_dense()
    for rle, mask in zip(masks.to_rle(), dense):
        assert isinstance(rle["counts"], str) and rle["size"] == [75, 131]
        ours = {"size": rle["size"], "counts": rle["counts"].encode()}
        assert np.array_equal(mask_utils.decode(ours).astype(bool), mask)
        assert mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"] == ours["counts"]
        assert mask_utils.area(ours) == mask.sum()
    assert np.array_equal(Masks.from_rle(masks.to_rle(), (75, 131)).to_dense(), dense)


def test_preset_without_weights_is_one_line_saying_where(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("OVDET_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFoundError) as info:
        locate_masker("sam2-hiera-tiny")
    message = str(info.value)
    assert "\n" not in message and "weights/sam2-hiera-tiny/" in message and "facebook/sam2.1-hiera-tiny" in message


@pytest.fixture(scope="module")
def masked_detector(tiny_owlv2, tiny_sams):
    return Detector.from_pretrained(tiny_owlv2, device="cpu", precision="fp32", threshold=0.0, max_detections=12,
                                    masks=str(tiny_sams["sam2"]))


def test_detector_masks_its_detections_and_reuses_the_embedding(masked_detector, chelsea_path):
    det = masked_detector
    dets = det.detect(chelsea_path, "cat,remote")
    assert len(dets) == 12 and len(dets.masks) == 12 and dets.masks.image_size == dets.image_size
    from ovdet.io import load_image

    image = load_image(chelsea_path)
    expected = det.masker(image, dets.xyxy)  # the masker on its own, same boxes
    assert np.array_equal(dets.masks.to_dense(), expected.to_dense())
    assert det.detect(chelsea_path, "cat", masks=False).masks is None
    top = dets[dets.scores >= np.sort(dets.scores)[-3]]  # selection keeps masks aligned
    assert np.array_equal(top.masks.to_dense(), dets.masks.to_dense()[dets.scores >= np.sort(dets.scores)[-3]])
    passes = det.masker.image_passes
    encoded = det.encode([chelsea_path])
    first = det.detect_encoded(encoded, "cat,remote")[0]
    second = det.detect_encoded(encoded, "dog,sofa,blanket")[0]
    assert det.masker.image_passes == passes + 1  # once per image, whatever the vocabularies
    assert np.array_equal(first.masks.to_dense(), dets.masks.to_dense()) and len(second.masks) == len(second)


def test_tiled_masks_are_per_tile_and_merged_with_their_boxes(tiny_owlv2, tiny_sams, astronaut_path):
    det = Detector.from_pretrained(tiny_owlv2, device="cpu", precision="fp32", threshold=0.0, max_detections=8,
                                   masks=str(tiny_sams["sam2"]), tile=256, tile_overlap=0.0)
    dets = det.detect(astronaut_path, "person,flag")
    assert len(dets) and len(dets.masks) == len(dets) and dets.masks.image_size == (512, 512)
    tiles = np.floor(dets.xyxy[:, :2] / 256) * 256
    # one SAM pass per tile holding a reported detection (2 x 2 tiles), made after merging
    assert det.masker.image_passes == len(np.unique(tiles, axis=0))
    # each mask was made on its box's tile: it lies within that 256 px tile
    boxes, nonempty = dets.masks.boxes(), dets.masks.areas > 0
    assert nonempty.any()
    assert (boxes[nonempty, :2] >= tiles[nonempty]).all() and (boxes[nonempty, 2:] <= tiles[nonempty] + 256).all()
    with pytest.raises(Exception, match="no masker"):
        Detector.from_pretrained(tiny_owlv2, device="cpu").detect(astronaut_path, "person", masks=True)


def test_detect_json_has_rle_and_polygons(tiny_owlv2, tiny_sams, chelsea_path, tmp_path):
    from ovdet.cli import main

    out = tmp_path / "r.json"
    code = main(["detect", str(chelsea_path), "--classes", "cat", "--model", str(tiny_owlv2), "--device", "cpu",
                 "--precision", "fp32", "--threshold", "0", "--max-det", "3", "--masks", str(tiny_sams["sam"]),
                 "--mask-format", "polygon", "--json", str(out), "--out", str(tmp_path / "drawn")])
    assert code == 0
    record = json.loads(out.read_text())[0]
    h, w = record["height"], record["width"]
    from pycocotools import mask as mask_utils

    for d in record["detections"]:
        assert d["mask"]["size"] == [h, w] and isinstance(d["mask"]["counts"], str)
        area = mask_utils.area({"size": [h, w], "counts": d["mask"]["counts"].encode()})
        assert isinstance(d["polygons"], list) and (area == 0) == (d["polygons"] == [])
        for poly in d["polygons"]:
            xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
            assert len(poly) >= 6 and (xs >= 0).all() and (xs < w).all() and (ys >= 0).all() and (ys < h).all()
    assert (tmp_path / "drawn" / chelsea_path.name).is_file()


def test_tiles_merge_the_masks_of_merged_boxes():
    """An object cut by tile edges: each tile outlines its part; "nmm" merges the boxes and
    the masks are joined (the union), "nms" keeps the kept box's own mask."""
    from ovdet import Detections
    from ovdet.tiling import TileSettings, detect_tiled

    height, width, obj = 100, 200, (30, 20, 170, 80)  # xyxy: no 100 px tile holds it whole
    image = np.zeros((height, width, 3), np.uint8)
    image[obj[1]:obj[3], obj[0]:obj[2]] = 255

    def predict(crops):
        return crops  # the "candidates" are the tiles themselves; finalise finds the white part

    def finalise(crop):
        ys, xs = np.nonzero(crop[..., 0])
        box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if len(xs) else np.zeros((0, 4))
        score = [0.5 + (xs.max() - xs.min()) / 1000] if len(xs) else []  # the whole object ranks first
        return Detections(xyxy=box, scores=score, class_ids=[0] * len(box), class_names=("thing",),
                          image_size=crop.shape[:2])

    def segment(crop, dets):
        return dets.replace(masks=Masks.from_dense(crop[None, ..., 0] > 0 if len(dets) else np.zeros((0, *crop.shape[:2])),
                                                   crop.shape[:2]))

    expected = np.zeros((height, width), bool)
    expected[obj[1]:obj[3], obj[0]:obj[2]] = True
    for merge in ("nmm", "nms"):
        settings = TileSettings(tile=100, overlap=0.5, merge=merge, metric="ios", merge_iou=0.3)
        dets = detect_tiled(image, predict, finalise, settings, batch_size=4, max_detections=10, segment=segment)
        assert len(dets) == 1 and len(dets.masks) == 1
        mask = dets.masks.dense(0)
        if merge == "nmm":
            assert np.array_equal(mask, expected) and np.array_equal(dets.xyxy[0], obj)
        else:  # the kept tile's part only, inside its own box
            x1, y1, x2, y2 = dets.xyxy[0].astype(int)
            assert mask.sum() == (x2 - x1) * (y2 - y1) < expected.sum() and mask[y1:y2, x1:x2].all()
