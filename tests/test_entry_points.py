"""One image, every door: a path, a URL, a PIL image, an array, a `ovdet serve` upload, `ovdet
label`, `ovdet eval`, a tile larger than the image, an ONNX export and a folder of video frames
all give the detections of the stock transformers processor on the full decode (issue 21).

The picture is a non-square 600 x 400 photo, larger than the tiny model's 128 px input (twice
the input is 256: a JPEG draft would reduce it), saved as JPEG and PNG. Reduced decoding is the
opt-in `reduced_decode`, and applies alike to files, URLs and uploads.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ovdet
from ovdet import Detector
from ovdet.adapters import to_coco_results, to_records
from ovdet.cli.app import main
from web import serve_folder

CLASSES = ["cat", "person", "a red bus"]
# fp32, every candidate through the same selection: equal inputs give bit-equal detections
SETTINGS = dict(device="cpu", precision="fp32", threshold=0.05, cache_text=False)
FORMATS = ("jpg", "png")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut_path) -> dict[str, Path]:
    """{"jpg": path, "png": path} of the same 600 x 400 picture, each alone in its folder."""
    base = tmp_path_factory.mktemp("photos")
    picture = Image.open(astronaut_path).convert("RGB").resize((600, 400))
    out = {}
    for fmt in FORMATS:
        (base / fmt).mkdir()
        out[fmt] = base / fmt / f"photo.{fmt}"
        picture.save(out[fmt], quality=90) if fmt == "jpg" else picture.save(out[fmt])
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_owlv2) -> Path:
    """The tiny OWLv2 with a tokenizer that has no `model_max_length` (as some checkpoints):
    prompts are padded to the text tower's own length everywhere, the export included."""
    folder = tmp_path_factory.mktemp("model") / "owlv2"
    shutil.copytree(tiny_owlv2, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("model_max_length", None)
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def detector(model) -> Detector:
    return Detector.from_pretrained(str(model), **SETTINGS)


@pytest.fixture(scope="module")
def reference(detector, photos) -> dict:
    """{format: Detections} from the fully decoded pixels passed as an array."""
    return {fmt: detector.detect(np.asarray(Image.open(p).convert("RGB")), CLASSES) for fmt, p in photos.items()}


@pytest.fixture(scope="module")
def url_base(photos):
    """http://127.0.0.1:PORT/ serving the photos' parent folder from a thread."""
    with serve_folder(photos["jpg"].parent.parent) as base:
        yield base


def url_of(base: str, path: Path) -> str:
    return f"{base}/{path.parent.name}/{path.name}"


def assert_equal(got, want):
    """Bit-equal detections: same boxes, scores, classes and image size."""
    assert len(want) > 0 and got.image_size == want.image_size
    np.testing.assert_array_equal(got.class_ids, want.class_ids)
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.xyxy, want.xyxy)


def upload(client, path: Path) -> dict:
    for _ in range(200):  # the model is handed over in a loader thread
        if client.get("/readyz").status_code == 200:
            break
        time.sleep(0.05)
    r = client.post("/v1/detect", files={"image": (path.name, path.read_bytes(), "image/jpeg")},
                    data={"classes": ",".join(CLASSES)})
    assert r.status_code == 200, r.text
    return r.json()


def serve_client(det: Detector):
    from fastapi.testclient import TestClient

    from ovdet.serve.app import ServedModels, create_app
    from ovdet.serve.limits import ServeSettings

    return TestClient(create_app(lambda: ServedModels(det), ServeSettings(max_batch=1, batch_wait_ms=0)))


# -- the in-process doors ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_path_url_pil_array_and_a_tile_larger_than_the_image_agree(detector, reference, photos, url_base, model, fmt):
    path = photos[fmt]
    assert not detector.load(path).reduced  # the exact decode is the default
    for image in (path, str(path), url_of(url_base, path), Image.open(path), path.read_bytes()):
        assert_equal(detector.detect(image, CLASSES), reference[fmt])
    tiled = Detector.from_pretrained(str(model), tile=2000, **SETTINGS)
    assert_equal(tiled.detect(path, CLASSES), reference[fmt])


def test_ovdet_equals_the_transformers_processor_model_and_post_processing_on_a_jpeg(model, photos):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    exact = Detector.from_pretrained(str(model), **{**SETTINGS, "threshold": 0.0}, nms_iou=1.0,
                                     max_detections=100_000, templates="{}")
    ours = exact.detect(photos["jpg"], CLASSES)
    image = Image.open(photos["jpg"])  # what a transformers user passes: the file, decoded in full
    processor = AutoProcessor.from_pretrained(model)
    hf = AutoModelForZeroShotObjectDetection.from_pretrained(model).eval()
    inputs = processor(text=[CLASSES], images=image, return_tensors="pt", padding="max_length",
                       max_length=hf.config.text_config.max_position_embeddings)
    with torch.no_grad():
        outputs = hf(**inputs)
    res = processor.image_processor.post_process_object_detection(outputs, threshold=0.0,
                                                                  target_sizes=[(image.height, image.width)])[0]
    order = torch.sort(res["scores"], descending=True, stable=True).indices
    boxes = res["boxes"][order].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # ovdet drops boxes squashed to nothing
    assert len(ours) == int(keep.sum()) > 10
    np.testing.assert_allclose(ours.scores, res["scores"][order][keep].numpy(), atol=1e-5)
    np.testing.assert_array_equal(ours.class_ids, res["labels"][order][keep].numpy())
    np.testing.assert_allclose(ours.xyxy, boxes[keep].numpy(), atol=1e-3)


# -- the commands ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_serve_upload_equals_the_path(detector, reference, photos, fmt):
    with serve_client(detector) as client:
        body = upload(client, photos[fmt])
    assert (body["height"], body["width"]) == reference[fmt].image_size
    assert body["detections"] == json.loads(json.dumps(to_records(reference[fmt])))


def test_label_output_equals_the_library(model, detector, reference, photos, tmp_path):
    from ovdet.label.work import LabelWork

    for fmt in FORMATS:
        out = tmp_path / fmt
        assert main(["label", str(photos[fmt]), "--model", str(model), "--classes", ",".join(CLASSES), "--out", str(out),
                     "--threshold", "0.05", "--device", "cpu", "--precision", "fp32"]) == 0
        (chunk,) = sorted((out / ".ovdet-label").glob("chunk-*.jsonl"))
        (record,) = [json.loads(line) for line in chunk.read_text().splitlines() if line.strip()]
        expected = LabelWork(detector.config, {n: [n] for n in CLASSES}, detector=detector).record(str(photos[fmt]), reference[fmt])
        assert record == json.loads(json.dumps(expected))


def test_label_skips_an_image_over_max_pixels_with_its_reason(model, photos, astronaut_path, tmp_path):
    small = tmp_path / "small.jpg"
    Image.open(astronaut_path).convert("RGB").resize((200, 150)).save(small)
    code = main(["label", str(small), str(photos["jpg"]), "--model", str(model), "--classes", "cat", "--out",
                 str(tmp_path / "out"), "--max-pixels", "100000", "--device", "cpu"])
    assert code == 1  # partial: one image skipped, the other labelled
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["images"] == 1 and report["skipped"] == 1
    (skipped,) = report["skipped_images"]
    assert skipped["path"] == str(photos["jpg"]) and "max_pixels" in skipped["reason"]


def test_eval_reads_images_as_the_library(detector, reference, photos, tmp_path):
    from ovdet.eval.dataset import load_dataset
    from ovdet.eval.runner import run_detector

    for fmt in FORMATS:
        annotations = tmp_path / f"{fmt}.json"
        annotations.write_text(json.dumps({
            "images": [{"id": 1, "file_name": photos[fmt].name, "width": 600, "height": 400}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500,
                             "iscrowd": 0}],
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]}))
        results = tmp_path / f"{fmt}-results.json"
        run_detector(detector, load_dataset(annotations), photos[fmt].parent, classes=CLASSES,
                     category_ids=[1, 2, 3], results_out=results, progress=False)
        want = to_coco_results(reference[fmt], 1, [1, 2, 3])
        assert json.loads(results.read_text()) == json.loads(json.dumps(want))


def test_video_frames_from_a_folder_equal_the_library(detector, reference, photos):
    for fmt in FORMATS:
        (frame,) = list(ovdet.stream(detector, str(photos[fmt].parent), CLASSES))
        assert_equal(frame.detections, reference[fmt])


@pytest.mark.parametrize("fmt", FORMATS)
def test_onnx_export_equals_torch_on_the_file(model, reference, photos, tmp_path_factory, fmt):
    """The export of a checkpoint whose tokenizer has no model_max_length runs prompts of
    different token lengths ("cat", "a red bus") and equals torch (fp32) on the JPEG and PNG."""
    pytest.importorskip("onnxruntime")
    from ovdet.export.exporter import export_detector

    folder = tmp_path_factory.getbasetemp() / "entry-export"
    if not folder.is_dir():
        export_detector(str(model), folder)
    exported = Detector.from_pretrained(str(folder), device="cpu", threshold=0.05, cache_text=False)
    got, want = exported.detect(photos[fmt], CLASSES), reference[fmt]
    assert len(got) == len(want) > 0 and got.image_size == want.image_size
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4, rtol=0)
    order_got, order_want = np.lexsort(got.xyxy.T[::-1]), np.lexsort(want.xyxy.T[::-1])
    np.testing.assert_allclose(got.xyxy[order_got], want.xyxy[order_want], atol=0.02)
    np.testing.assert_array_equal(got.class_ids[order_got], want.class_ids[order_want])


# -- reduced decoding: one opt-in setting, the same on every door that reads encoded bytes ------
def test_reduced_decode_is_the_same_on_path_url_and_upload(model, photos, url_base):
    reduced = Detector.from_pretrained(str(model), reduced_decode=True, **SETTINGS)
    path = photos["jpg"]
    loaded = reduced.load(path)
    assert loaded.reduced and loaded.array.shape == (200, 300, 3) and loaded.size == (400, 600)
    from_path = reduced.detect(path, CLASSES)
    assert from_path.image_size == (400, 600)
    assert_equal(reduced.detect(url_of(url_base, path), CLASSES), from_path)
    with serve_client(reduced) as client:
        body = upload(client, path)
    assert body["detections"] == json.loads(json.dumps(to_records(from_path)))
    assert not reduced.load(photos["png"]).reduced  # only JPEGs have a draft mode


def test_reduced_decode_flag_reaches_the_config():
    from ovdet.kit.parser import Parser
    from ovdet.kit.options import add_model_options, config_overrides

    parser = Parser(prog="ovdet test")
    add_model_options(parser)
    assert config_overrides(parser.parse_args(["--reduced-decode"]))["reduced_decode"] is True
    assert config_overrides(parser.parse_args([]))["reduced_decode"] is None  # the preset's: off
