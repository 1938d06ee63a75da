"""Ultralytics parts: YOLO-World with ovdet's text embeddings, the class-agnostic YOLO proposer,
weights lookup and the offline guard.

Models are randomly initialised from ultralytics' own YAML configs, saved to .pt files the way
ultralytics saves checkpoints (`Model.save`) and loaded back through ovdet's loading code. Every
test runs with sockets disabled (connect, create_connection and DNS raise and are recorded), and
checks that nothing tried the network.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["YOLO_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

from ovdet.config import DetectorConfig, load_config  # noqa: E402
from ovdet.detector import Detector  # noqa: E402
from ovdet.errors import ConfigError, OvdetError, WeightsNotFoundError  # noqa: E402
from yolo_models import save_random, save_unit_world  # noqa: E402  (tests/yolo_models.py)

IMGSZ = 320  # small input keeps the full-size architectures fast on a CPU
CPU = torch.device("cpu")

NETWORK_ATTEMPTS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Sockets raise for the whole module; every attempt is recorded for the assertions."""

    def refuse(name):
        def _refuse(*args, **kwargs):
            NETWORK_ATTEMPTS.append(f"{name}{args[1:] if name == 'connect' else args}")
            raise OSError(f"network disabled in tests ({name})")

        return _refuse

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse("connect"))
    mp.setattr(socket, "create_connection", refuse("create_connection"))
    mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    yield NETWORK_ATTEMPTS
    mp.undo()
    assert NETWORK_ATTEMPTS == [], f"something tried the network: {NETWORK_ATTEMPTS}"


@pytest.fixture(scope="module", autouse=True)
def _fresh_download_log():
    """Refusals recorded by earlier test modules (ultralytics training looks for a font in the
    label tests, and is refused as designed) are not this module's."""
    from ovdet.backends.yolo import BLOCKED_DOWNLOADS

    BLOCKED_DOWNLOADS.clear()
    yield


def assert_offline():
    from ovdet.backends.yolo import BLOCKED_DOWNLOADS

    assert NETWORK_ATTEMPTS == [] and BLOCKED_DOWNLOADS == []


@pytest.fixture(scope="module")
def world_pt(no_network, tmp_path_factory) -> Path:
    return save_random("world", "yolov8s-worldv2.yaml", tmp_path_factory.mktemp("yolo") / "yolov8s-worldv2-random.pt")


@pytest.fixture(scope="module")
def yolo_pt(no_network, tmp_path_factory) -> Path:
    return save_random("yolo", "yolov8n.yaml", tmp_path_factory.mktemp("yolo") / "yolov8n-random.pt")


@pytest.fixture(scope="module")
def world(world_pt, tiny_clip512):
    from ovdet.backends.yolo import YoloWorldBackend

    # conf 0: a random YOLO-World's scores are ~1e-5 (contrastive bias -10); keep them all
    return YoloWorldBackend.load(world_pt, tiny_clip512, CPU, torch.float32, imgsz=IMGSZ, conf=0.0, max_det=50)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((240, 320, 3), (300, 200, 3))]


def check_boxes(boxes: torch.Tensor, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


# -- YOLO-World ---------------------------------------------------------------------------------


def test_yolo_world_runs_on_ovdet_text_embeddings(world, images):
    embeds = world.encode_text(["cat", "dog", "a red bus"])
    assert embeds.shape == (3, 512) and torch.allclose(embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    out = world.predict(images, embeds)
    assert len(out) == len(images)
    for cand, image in zip(out, images):
        assert cand.image_size == image.shape[:2]
        assert 0 < len(cand.boxes) <= 50
        check_boxes(cand.boxes, image)
        assert cand.scores.shape == (len(cand.boxes), 3) and cand.raw.shape == cand.scores.shape
        assert ((cand.scores >= 0) & (cand.scores <= 1)).all()
        assert ((cand.scores > 0).sum(dim=1) == 1).all()  # each box: its confidence in one class column
        assert torch.equal(cand.raw, cand.scores)
    assert world.model.txt_feats.shape == (1, 3, 512) and world.model.model[-1].nc == 3
    assert len(world.model.names) == 3
    assert_offline()


def test_multi_label_reports_a_box_under_several_classes(world, images, monkeypatch):
    embeds = world.encode_text(["cat", "dog", "a red bus"])
    monkeypatch.setattr(world, "max_det", 100_000)  # no top-k: every pair NMS keeps
    single = world.predict(images[:1], embeds)[0]
    monkeypatch.setattr(world, "multi_label", True)
    multi = world.predict(images[:1], embeds)[0]
    assert len(multi.boxes) > len(single.boxes)
    assert ((multi.scores > 0).sum(dim=1) == 1).all()  # one (box, class) pair per row
    # the random network scores every class alike, so some box must come back for two classes
    assert len(torch.unique(multi.boxes, dim=0)) < len(multi.boxes)


def test_changing_the_vocabulary_changes_classes_without_download(world, images):
    two = world.encode_text(["cat", "dog"])
    five = world.encode_text(["cat", "dog", "bus", "person", "stroller"])
    assert [c.scores.shape[1] for c in world.predict(images[:1], two)] == [2]
    feats = world.model.txt_feats
    world.predict(images[:1], two.clone())  # same vocabulary: the text features are not rebuilt
    assert world.model.txt_feats is feats
    out = world.predict(images[:1], five)
    assert out[0].scores.shape[1] == 5 and world.model.model[-1].nc == 5
    assert world.model.txt_feats.shape == (1, 5, 512) and world.model.txt_feats is not feats
    assert_offline()


def test_text_features_match_ultralytics_set_classes(world, world_pt, monkeypatch):
    """ovdet's text path sets exactly what ultralytics' set_classes would, given the same embeddings."""
    from ultralytics import YOLOWorld
    from ultralytics.nn.tasks import WorldModel

    embeds = world.encode_text(["cat", "dog", "bus"])
    # ultralytics' get_text_pe would run OpenAI CLIP (a download); hand it ovdet's embeddings instead
    monkeypatch.setattr(WorldModel, "get_text_pe", lambda self, text, batch=80, cache_clip_model=False: embeds[None].clone())
    ref = YOLOWorld(str(world_pt))
    ref.set_classes(["cat", "dog", "bus"])
    ref_net = ref.model.fuse(verbose=False).eval()
    world.set_text(embeds)
    assert ref_net.model[-1].nc == world.model.model[-1].nc == 3
    torch.testing.assert_close(world.model.txt_feats, ref_net.txt_feats)
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours, theirs = world.runner.forward(x)[0], ref_net(x)[0]
    assert ours.shape == theirs.shape == (1, 4 + 3, (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    assert_offline()


def test_detector_with_yolo_world_preset(world_pt, tiny_clip512, images):
    """The preset through the builder and Detector: Detections back, vocabulary changes free."""
    from ovdet.backends.yolo import build_yolo_world

    cfg = load_config("yolo-world-s", weights=str(world_pt), text_weights=str(tiny_clip512))
    assert cfg.backend == "yolo_world" and cfg.templates == "{}"
    backend = build_yolo_world(cfg, CPU, torch.float32)
    assert backend.runner.imgsz == 640 and backend.iou == cfg.nms_iou
    backend.conf, backend.runner.imgsz = 0.0, IMGSZ  # random weights: keep every candidate; small input: fast
    det = Detector(backend, cfg)
    dets = det.detect(images[0], ["cat", "dog"], threshold=0.0)
    assert dets.class_names == ("cat", "dog") and 0 < len(dets) <= cfg.max_detections
    assert (dets.class_ids < 2).all() and ((dets.scores > 0) & (dets.scores <= 1)).all()
    assert (dets.xyxy[:, 2] <= 320).all() and (dets.xyxy[:, 3] <= 240).all() and (dets.xyxy >= 0).all()
    dets = det.detect(images[0], "cat,dog,bus", threshold=0.0)
    assert dets.class_names == ("cat", "dog", "bus") and backend.model.model[-1].nc == 3
    assert_offline()


def test_yolo_world_rejects_given_boxes_and_wrong_models(world, yolo_pt, tiny_clip, images):
    from ovdet.backends.yolo import YoloWorldBackend, load_yolo_model
    from ovdet.clip import ClipModel
    from ovdet.proposers import Proposals

    embeds = world.encode_text(["cat"])
    given = [Proposals(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.ones(1))]
    with pytest.raises(OvdetError, match="predicts its own boxes"):
        world.predict(images[:1], embeds, given)
    with pytest.raises(ConfigError, match="not a YOLO-World model"):
        YoloWorldBackend(load_yolo_model(yolo_pt, CPU), world.text, CPU)
    with pytest.raises(ConfigError, match="32-d text embeddings but YOLO-World takes 512-d"):
        YoloWorldBackend(world.model, ClipModel.load(tiny_clip, CPU, torch.float32), CPU)


# -- class-agnostic proposer --------------------------------------------------------------------


@pytest.fixture(scope="module")
def seg_pt(no_network, tmp_path_factory) -> Path:
    return save_random("yolo", "yolov8n-seg.yaml", tmp_path_factory.mktemp("yolo") / "yolov8n-seg-random.pt")


@pytest.mark.parametrize("weights", ["yolo_pt", "seg_pt"])
def test_yolo_proposer_gives_class_agnostic_proposals(weights, request, images):
    from ovdet.backends.yolo import YoloProposer

    proposer = YoloProposer(request.getfixturevalue(weights), CPU, conf=0.0, iou=0.6, max_det=40, imgsz=IMGSZ)
    props = proposer.propose(images)
    assert len(props) == len(images)
    for p, image in zip(props, images):
        assert 0 < len(p.boxes) <= 40
        check_boxes(p.boxes, image)
        assert p.objectness.dtype == torch.float32
        assert ((p.objectness >= 0) & (p.objectness <= 1)).all()
        assert (p.objectness[:-1] >= p.objectness[1:]).all()  # best first
    assert proposer.propose([]) == []
    assert_offline()


def test_yolo_proposer_matches_ultralytics_predictor(yolo_pt, images):
    """Same network input as ultralytics' predictor given the BGR image, and the same boxes and
    confidences out of the same raw predictions with agnostic NMS."""
    from torchvision.ops import box_iou
    from ultralytics import YOLO

    from ovdet.backends.yolo import YoloProposer

    proposer = YoloProposer(yolo_pt, CPU, conf=0.05, iou=0.6, max_det=30, imgsz=IMGSZ)
    ref = YOLO(str(yolo_pt))
    bgr = [im[..., ::-1].copy() for im in images]
    ref.predict(bgr[0], imgsz=IMGSZ, conf=0.05, iou=0.6, agnostic_nms=True, max_det=30, verbose=False)
    predictor = ref.predictor
    for batch in ([0], [1], [0, 1]):  # single images (rectangular letterbox) and a mixed-shape batch (square)
        x_ref = predictor.preprocess([bgr[i] for i in batch])
        x = proposer.runner.preprocess([images[i] for i in batch])
        assert torch.equal(x, x_ref)

    # synthetic raw predictions with distinct scores: (1, 4 + 80, A), xywh in letterboxed pixels
    gen = torch.Generator().manual_seed(0)
    x = proposer.runner.preprocess(images[:1])
    hh, ww = x.shape[2:]
    a = 400
    wh = 8 + torch.rand(2, a, generator=gen) * 80
    xy = wh / 2 + torch.rand(2, a, generator=gen) * (torch.tensor([[ww], [hh]]) - wh)  # boxes inside the input
    scores = torch.rand(80, a, generator=gen) * 0.2
    scores[torch.randint(0, 80, (a,), generator=gen), torch.arange(a)] = torch.rand(a, generator=gen)
    preds = torch.cat([xy, wh, scores])[None]
    ours = proposer.runner.postprocess(preds, x.shape[2:], images[:1], conf=0.05, iou=0.6, agnostic=True, max_det=30)[0]
    theirs = predictor.postprocess(preds.clone(), x, [bgr[0]])[0].boxes
    assert len(ours) == len(theirs) == 30
    torch.testing.assert_close(ours[:, :4], theirs.xyxy.float())
    torch.testing.assert_close(ours[:, 4], theirs.conf.float())
    # class-agnostic: no two kept boxes overlap past iou whatever their classes (an image the size
    # of the network input, so no rescaling; boxes inside it, so clipping changes nothing)
    unpadded = [np.zeros((hh, ww, 3), np.uint8)]
    kept = proposer.runner.postprocess(preds, x.shape[2:], unpadded, 0.05, 0.6, True, 400)[0]
    per_class = proposer.runner.postprocess(preds, x.shape[2:], unpadded, 0.05, 0.6, False, 400)[0]
    assert len(kept) < len(per_class)
    assert (box_iou(kept[:, :4], kept[:, :4]).fill_diagonal_(0) <= 0.6 + 1e-5).all()
    assert_offline()


def test_build_yolo_proposer_from_config(yolo_pt):
    from ovdet.backends.yolo import YoloProposer, build_yolo_proposer

    cfg = DetectorConfig(backend="clip", proposer="yolo", proposer_weights=str(yolo_pt), proposals=17)
    proposer = build_yolo_proposer(cfg, CPU)
    assert isinstance(proposer, YoloProposer) and proposer.max_det == 17


def test_yolo_proposer_rejects_classifiers(tmp_path):
    from ovdet.backends.yolo import YoloProposer

    pt = save_random("yolo", "yolov8n-cls.yaml", tmp_path / "cls.pt")
    with pytest.raises(ConfigError, match="classify model; proposals need a detect"):
        YoloProposer(pt, CPU)


# -- weights and the offline guard ----------------------------------------------------------------


def test_weights_lookup_does_not_import_the_yolo_backends():
    """ovdet.weights sits below the YOLO file lookup (no import circle); ultralytics stays
    unimported until a YOLO model is used."""
    code = (
        "import sys, ovdet.weights, ovdet.downloads, ovdet.backends.yolo; "
        "import ast, inspect; src = inspect.getsource(ovdet.weights); "
        "assert not [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and 'backends' in (n.module or '')]; "
        "assert 'ultralytics' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})


def test_find_yolo_weights_missing_is_one_line(tmp_path, monkeypatch):
    from ovdet.backends.yolo import find_yolo_weights

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OVDET_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        find_yolo_weights("yolov8s-worldv2.pt")
    message, details = str(err.value), err.value.details
    assert "\n" not in message and len(message) < 200, message
    assert message.startswith("run `ovdet weights download yolo-world-s`")
    assert str(tmp_path / "weights" / "yolov8s-worldv2.pt") in details  # the places looked: for --debug
    assert "$OVDET_WEIGHTS (unset)" in details
    with pytest.raises(WeightsNotFoundError, match="put it in weights/: no mine.pt on this machine"):
        find_yolo_weights("mine.pt")
    assert_offline()


def test_find_yolo_weights_search_order(tmp_path, monkeypatch):
    from ovdet.backends.yolo import find_yolo_weights

    env_dir, cwd = tmp_path / "env", tmp_path / "cwd"
    (cwd / "weights").mkdir(parents=True)
    env_dir.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("OVDET_WEIGHTS", str(env_dir))
    (env_dir / "a.pt").write_bytes(b"x")
    assert find_yolo_weights("a.pt") == env_dir / "a.pt"
    (cwd / "weights" / "a.pt").write_bytes(b"x")
    assert find_yolo_weights("a.pt") == Path("weights").resolve() / "a.pt"
    explicit = tmp_path / "b.pt"
    explicit.write_bytes(b"x")
    assert find_yolo_weights(str(explicit)) == explicit


def test_ultralytics_cannot_download_or_install(tmp_path, monkeypatch):
    from ovdet.backends import yolo

    yolo.ultralytics_offline()
    import ultralytics.utils as ul_utils
    import ultralytics.utils.checks as ul_checks
    from ultralytics.utils.downloads import attempt_download_asset

    assert ul_utils.ONLINE is False and ul_checks.AUTOINSTALL is False
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="ultralytics tried to download https://github.com/.*yolov8n.pt"):
        attempt_download_asset("yolov8n.pt")  # what YOLO("yolov8n.pt") does for a missing file
    assert yolo.BLOCKED_DOWNLOADS and yolo.BLOCKED_DOWNLOADS[-1].endswith("yolov8n.pt")
    assert not (tmp_path / "yolov8n.pt").exists()
    yolo.BLOCKED_DOWNLOADS.clear()

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"ultralytics ran {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "check_output", no_subprocess)
    assert not ul_checks.check_requirements("ovdet-surely-not-a-package-xyz")  # AutoUpdate disabled: no pip
    with pytest.raises(WeightsNotFoundError, match="cannot load YOLO checkpoint"):
        bad = tmp_path / "broken.pt"
        bad.write_bytes(b"not a checkpoint")
        yolo.load_yolo_model(bad, CPU)
    assert NETWORK_ATTEMPTS == []


# -- fast paths ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    from PIL import Image

    photo = Image.open(Path(__file__).parent.parent / "examples" / "astronaut.jpg").convert("RGB")
    return [np.asarray(photo.resize((400, 300))), np.asarray(photo.resize((240, 320)))[:, ::-1].copy()]


@pytest.fixture(scope="module")
def world_unit_pt(world_pt, photos, tmp_path_factory) -> Path:
    """The random YOLO-World with unit-variance activations (see `yolo_models.unit_variance_`)."""
    return save_unit_world(world_pt, photos[0], IMGSZ, tmp_path_factory.mktemp("yolo") / "yolov8s-worldv2-unit.pt")


@pytest.mark.parametrize("dtype, path", [(torch.bfloat16, "bf16-channels-last"), (torch.float32, "fp32"),
                                         (torch.float16, "fp32")])
def test_cpu_fast_path_is_taken_only_in_bf16(world_pt, photos, dtype, path):
    """bf16 on a CPU: bf16 weights, channels-last input and weights, boxes decoded in fp32.
    fp32 (and fp16, which CPUs run slower than fp32): the unmodified fused fp32 network."""
    from ovdet.backends.yolo import YoloRunner, load_yolo_model

    runner = YoloRunner(load_yolo_model(world_pt, CPU), CPU, IMGSZ, dtype)
    assert runner.path == path
    x = runner.preprocess(photos[:1])
    conv = runner.model.model[0].conv
    fast = path == "bf16-channels-last"
    assert x.dtype == conv.weight.dtype == (torch.bfloat16 if fast else torch.float32)
    assert x.is_contiguous(memory_format=torch.channels_last) == fast and x.is_contiguous() == (not fast)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == fast
    assert getattr(runner.head, "decodes_in_fp32", False) == fast
    y = runner.forward(x)[0]
    assert y.dtype == torch.float32  # boxes and scores leave the network in fp32 on every path
    # uint8 letterboxed once, then converted in one pass: ultralytics' values (/255), rounded to dtype
    from ultralytics.data.augment import LetterBox

    boxed = LetterBox(new_shape=(runner.imgsz, runner.imgsz), auto=True, stride=runner.stride)(image=photos[0])
    expected = torch.from_numpy(boxed).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(x.float(), expected, rtol=2**-8 if fast else 0, atol=0)


def test_bf16_fast_path_matches_fp32(world_unit_pt, photos):
    """Accuracy guard: the same top detections in bf16 channels-last as in fp32.

    Tolerances: bf16 keeps 8 mantissa bits, so every one of the ~60 convolutions rounds its
    output at 0.4 %; on this unit-variance random network (no trained redundancy: the worst
    case for accumulated rounding) that moves box corners by a median ~0.7 px at 320 px and
    confidences by at most ~0.03, while a small box may lose up to ~20 % IoU. Asked: each of
    the 10 best fp32 detections has a bf16 detection of the same class with IoU >= 0.75
    (median over them >= 0.95) and a confidence within 0.05, and the median corner of those
    matches moves by under 1.5 px. `precision: fp32` gives ultralytics' numbers exactly."""
    from torchvision.ops import box_iou

    from ovdet.backends.yolo import YoloRunner, load_yolo_model

    fp32 = YoloRunner(load_yolo_model(world_unit_pt, CPU), CPU, IMGSZ, torch.float32)
    bf16 = YoloRunner(load_yolo_model(world_unit_pt, CPU), CPU, IMGSZ, torch.bfloat16)
    assert bf16.path == "bf16-channels-last"
    for ref, fast in zip(fp32.run(photos, 0.25, 0.7, False, 100), bf16.run(photos, 0.25, 0.7, False, 100)):
        assert len(ref) >= 10 and len(fast) >= 10
        top = ref[:10]
        same_class = top[:, 5:6] == fast[None, :, 5]
        best = (box_iou(top[:, :4], fast[:, :4]) * same_class).max(dim=1)
        matched = fast[best.indices]
        report = (f"IoU {best.values.tolist()}, score diff {(matched[:, 4] - top[:, 4]).abs().max():.4f}, "
                  f"median corner {(matched[:, :4] - top[:, :4]).abs().median():.2f} px")
        assert best.values.min() >= 0.75 and best.values.median() >= 0.95, report
        assert (matched[:, 4] - top[:, 4]).abs().max() <= 0.05, report
        assert (matched[:, :4] - top[:, :4]).abs().median() <= 1.5, report


def test_detector_precision_picks_the_yolo_path(world_pt, yolo_pt, tiny_clip512, monkeypatch):
    """The config's precision reaches YOLO-World and the YOLO proposer: bf16 -> the fast path,
    fp32 -> fp32, auto -> bf16 only on CPUs with fast bf16."""
    from ovdet import runtime

    def world(precision):
        return Detector.from_config(load_config("yolo-world-s", weights=str(world_pt), text_weights=str(tiny_clip512),
                                                precision=precision, device="cpu")).backend.runner.path

    assert world("bf16") == "bf16-channels-last" and world("fp32") == "fp32"
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert world("auto") == "fp32"
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert world("auto") == "bf16-channels-last"
    cfg = DetectorConfig(backend="clip", weights=str(tiny_clip512), proposer="yolo", proposer_weights=str(yolo_pt),
                         scoring="softmax", precision="bf16", device="cpu")
    assert Detector.from_config(cfg).backend.proposer.runner.path == "bf16-channels-last"
    assert_offline()
