"""`ovdet serve`'s HTTP API, served by uvicorn in a thread of the test process: answers equal
the library's, batching across requests, every limit and error, and the server keeps serving."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time

import httpx
import pytest
from PIL import Image

from ovdet import Detector
from ovdet.io import load_image  # the server decodes uploaded bytes in full, as a path is by default
from ovdet.adapters import to_records
from ovdet.classify import Classifier
from ovdet.serve.app import ServedModels, create_app
from ovdet.serve.background import serve_in_thread
from ovdet.serve.limits import ServeSettings

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def library(tiny_owlv2):
    """The detector the answers are compared with: loaded separately from the server's."""
    return Detector.from_pretrained(tiny_owlv2, precision="fp32", threshold=0.05)


@pytest.fixture(scope="module")
def models(tiny_owlv2, tiny_clip):
    def load():
        return ServedModels(Detector.from_pretrained(tiny_owlv2, precision="fp32", threshold=0.05),
                            Classifier.from_pretrained(tiny_clip, precision="fp32"), "tiny-clip")
    return load


@pytest.fixture(scope="module")
def server(models):
    settings = ServeSettings(max_batch=8, batch_wait_ms=300, max_image_mb=0.5, max_pixels=2_000_000, max_classes=20)
    app = create_app(models, settings)
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def post_image(client, path_or_bytes, route="/v1/detect", name="photo.jpg", **fields):
    data = path_or_bytes.read_bytes() if hasattr(path_or_bytes, "read_bytes") else path_or_bytes
    return client.post(route, files={"image": (name, data, "image/jpeg")}, data=fields)


def alive(client, chelsea_path):
    r = post_image(client, chelsea_path, classes="cat")
    assert r.status_code == 200, r.text
    return True


def metric(client, name, labels=None) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                total += s.value
    return total


# -- answers -----------------------------------------------------------------------------------
def test_detect_answers_what_the_library_answers(client, library, chelsea_path, astronaut_path):
    for path, classes, extra in [(chelsea_path, "cat,remote control", {}),
                                 (astronaut_path, "person, rocket,flag", {"threshold": "0.3"}),
                                 (chelsea_path, "cat,dog", {"negatives": "toy,statue"})]:
        r = post_image(client, path, name=path.name, classes=classes, **extra)
        assert r.status_code == 200, r.text
        dets = library.detect(load_image(path), classes, threshold=float(extra.get("threshold", 0.05)),
                              negatives=extra.get("negatives"))
        h, w = dets.image_size
        assert r.json() == {"image": path.name, "width": w, "height": h, "detections": to_records(dets)}
        assert len(dets) > 0
    # the same request as JSON with a base64 image (classes as a list)
    body = {"image": base64.b64encode(chelsea_path.read_bytes()).decode(), "classes": ["cat", "remote control"],
            "filename": "c.jpg"}
    r = client.post("/v1/detect", json=body)
    assert r.status_code == 200, r.text
    dets = library.detect(load_image(chelsea_path), ["cat", "remote control"])
    assert r.json()["detections"] == to_records(dets) and r.json()["image"] == "c.jpg"


def test_concurrent_clients_with_different_vocabularies_are_batched(server, client, library, chelsea_path,
                                                                     astronaut_path):
    vocabularies = ["cat", "dog,cat", "person", "rocket,flag,person", "remote control", "cat,sofa", "helmet", "tree"]
    paths = [chelsea_path, astronaut_path] * 4
    before = metric(client, "ovdet_batch_size_count"), metric(client, "ovdet_batch_size_bucket", {"le": "1.0"})
    answers, errors = [None] * 8, []
    start = threading.Barrier(8)

    def ask(i):
        try:
            with httpx.Client(base_url=server[0], timeout=60) as c:
                start.wait()
                answers[i] = post_image(c, paths[i], classes=vocabularies[i])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        single = post_image(client, paths[i], classes=vocabularies[i])  # alone, after the burst
        assert r.json() == single.json()
        assert r.json()["detections"] == to_records(library.detect(load_image(paths[i]), vocabularies[i]))
    batches = metric(client, "ovdet_batch_size_count") - before[0]
    singles = metric(client, "ovdet_batch_size_bucket", {"le": "1.0"}) - before[1]
    assert batches - singles >= 1, "no image-tower pass served more than one request"
    assert metric(client, "ovdet_batch_size_sum") >= 8


def test_classify_answers_what_the_library_answers(client, tiny_clip, chelsea_path):
    r = post_image(client, chelsea_path, route="/v1/classify", classes="cat,dog,car", top_k="2")
    assert r.status_code == 200, r.text
    res = Classifier.from_pretrained(tiny_clip, precision="fp32").classify(chelsea_path, "cat,dog,car")
    body = r.json()
    assert body["probabilities"] == pytest.approx(res.as_dict(), abs=1e-6)
    assert [t["class_name"] for t in body["top"]] == [n for n, _ in res.top(2)]
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-5


def test_model_health_metrics_and_docs(client, chelsea_path):
    # one detection, so that the batch-size histogram has a sample whichever test ran before
    assert post_image(client, chelsea_path, name="c.jpg", classes="cat").status_code == 200
    m = client.get("/v1/model").json()
    assert m["backend"] == "owl" and m["device"] == "cpu" and m["precision"] == "fp32"
    assert m["batching"] == "image_pass" and m["classify_model"] == "tiny-clip" and m["limits"]["max_batch"] == 8
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    text = client.get("/metrics").text
    for name in ("ovdet_http_requests_total", "ovdet_http_request_duration_seconds_bucket", "ovdet_batch_size_bucket",
                 "ovdet_queue_depth", "ovdet_model_ready 1.0"):
        assert name in text
    assert 'route="/v1/model",status="200"' in text
    assert "swagger" in client.get("/docs").text.lower()
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    page = client.get("/")
    assert page.status_code == 200 and 'id="classes"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    # nothing from the network: every linked file is this server's
    links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert links and all(link.startswith(("/static/", "data:")) for link in links), links  # data: the inline favicon
    assert "fetch(\"/v1/" in client.get("/static/app.js").text and "://" not in client.get("/static/style.css").text


# -- limits and errors ----------------------------------------------------------------------------
def png_bytes(width, height, mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def expect(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["message"], body
    return r


def test_bad_images_and_classes_are_400(client, chelsea_path):
    r = expect(post_image(client, b"not an image at all", classes="cat"), 400, "unreadable_image")
    assert r.json()["message"].startswith("cannot read the uploaded image: cannot identify image file")
    expect(post_image(client, b"", classes="cat"), 400, "unreadable_image")
    jpeg = chelsea_path.read_bytes()
    expect(post_image(client, jpeg[: len(jpeg) // 2], classes="cat"), 400, "unreadable_image")  # truncated file
    expect(post_image(client, chelsea_path, classes="cat,,dog"), 400, "bad_classes")
    expect(post_image(client, chelsea_path, classes="cat,Cat"), 400, "bad_classes")
    expect(post_image(client, chelsea_path, classes=" , "), 400, "bad_classes")
    expect(post_image(client, chelsea_path, classes="cat", negatives="cat"), 400, "bad_classes")
    many = ",".join(f"thing {i}" for i in range(21))
    expect(post_image(client, chelsea_path, classes=many), 400, "too_many_classes")
    assert alive(client, chelsea_path)


def test_too_large_in_bytes_or_pixels_is_413(client, chelsea_path):
    """Each 413 says the real size (or "over" what was read) and the image limit as the operator
    set it (--max-image-mb 0.5 here); the pixel 413 tells the client to downscale."""
    def message(r):
        return expect(r, 413, "too_large").json()["message"]

    big = b"\xff" * (600 * 1024)  # over the 0.5 MB image limit, under the body limit
    assert message(post_image(client, big, classes="cat")) == \
        "the image is 0.586 MB; this server accepts images up to 0.5 MB"
    b64 = base64.b64encode(b"\xff" * (540 * 1024)).decode()  # under the body limit, over the image's
    assert message(client.post("/v1/detect", json={"image": b64, "classes": ["cat"]})) == \
        "the image is 0.527 MB; this server accepts images up to 0.5 MB"
    huge_body = b"0" * (800 * 1024)  # Content-Length over the body limit: refused before reading
    assert message(client.post("/v1/detect", content=huge_body, headers={"content-type": "application/json"})) == \
        ("the request body is 0.781 MB; this server accepts images up to 0.5 MB "
         "(a request body up to 0.729 MB, base64 included)")

    def chunks():  # no Content-Length: the limit applies while the body streams
        for _ in range(100):
            yield b"x" * 16384

    assert message(client.post("/v1/detect", content=chunks(), headers={"content-type": "application/json"})) \
        .startswith("the request body is over 0.729 MB; this server accepts images up to 0.5 MB")
    pixels = message(post_image(client, png_bytes(2000, 1001), classes="cat", name="wide.png"))
    assert pixels == ("the image is 2000x1001 = 2,002,000 pixels; this server accepts up to 2,000,000: "
                      "downscale it to at most that many (e.g. 1999x1000) and send it again")
    assert "--max-pixels" not in pixels
    assert alive(client, chelsea_path)


def test_decompression_bomb_is_refused_from_its_header(client, chelsea_path):
    # 400 Mpx: over --max-pixels (checked on the header); 900 Mpx: PIL itself refuses to open it
    for side in (20000, 30000):
        bomb = png_bytes(side, side, mode="1")  # zeros: a file of about 100 KB
        assert len(bomb) < 500 * 1024
        start = time.perf_counter()
        r = expect(post_image(client, bomb, classes="cat", name="bomb.png"), 413, "too_large")
        assert f"{side * side:,}" in r.json()["message"] or f"{side * side} pixels" in r.json()["message"]
        assert time.perf_counter() - start < 5  # never decoded (that takes far longer, and gigabytes)
    assert alive(client, chelsea_path)


def test_malformed_fields_are_422_and_media_type_415(client, chelsea_path):
    expect(post_image(client, chelsea_path, classes="cat", threshold="abc"), 422, "invalid_request")
    expect(post_image(client, chelsea_path, classes="cat", threshold="1.5"), 422, "invalid_request")
    expect(post_image(client, chelsea_path, clases="cat"), 422, "invalid_request")  # typo: unknown + missing
    expect(client.post("/v1/detect", data={"classes": "cat"}, files={"other": ("x", b"1")}), 422, "invalid_request")
    expect(client.post("/v1/detect", json={"image": "%%% not base64", "classes": ["cat"]}), 422, "invalid_request")
    expect(client.post("/v1/detect", json={"classes": ["cat"]}), 422, "invalid_request")
    expect(client.post("/v1/detect", content=b"{not json", headers={"content-type": "application/json"}),
           422, "invalid_request")
    expect(client.post("/v1/detect", json=[1, 2]), 422, "invalid_request")
    expect(post_image(client, chelsea_path, route="/v1/classify", classes="cat", top_k="0"), 422, "invalid_request")
    expect(client.post("/v1/detect", content=b"hello", headers={"content-type": "text/plain"}), 415,
           "unsupported_media_type")
    expect(client.get("/v1/nothing"), 404, "not_found")
    expect(client.get("/v1/detect"), 405, "method_not_allowed")
    assert alive(client, chelsea_path)


def test_truncated_upload_connection_does_not_disturb_the_server(server, client, chelsea_path):
    host, port = server[0].removeprefix("http://").split(":")
    jpeg = chelsea_path.read_bytes()
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"c.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as s:  # promises 100 kB, sends 20, hangs up
        s.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                  b"Content-Type: multipart/form-data; boundary=" + boundary.encode() + b"\r\n\r\n" + head + jpeg[:20000])
    time.sleep(0.2)
    assert alive(client, chelsea_path)


def test_api_key_is_required_and_compared(models, chelsea_path):
    app = create_app(models, ServeSettings(api_key=KEY))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = expect(post_image(c, chelsea_path, classes="cat"), 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer wrong-key"}
        expect(c.post("/v1/detect", files={"image": ("c.jpg", chelsea_path.read_bytes())}, data={"classes": "cat"},
                      headers=bad), 401, "unauthorized")
        expect(c.get("/v1/model", headers={"Authorization": KEY}), 401, "unauthorized")  # no scheme
        expect(c.get("/metrics"), 401, "unauthorized")
        good = {"Authorization": f"Bearer {KEY}"}
        r = c.post("/v1/detect", files={"image": ("c.jpg", chelsea_path.read_bytes())}, data={"classes": "cat"},
                   headers=good)
        assert r.status_code == 200, r.text
        assert c.get("/v1/model", headers=good).json()["auth"] is True
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200  # open: probes, page


def test_full_queue_is_503_with_retry_after_and_timeout_is_504(models, chelsea_path):
    gate, entered, passes = threading.Event(), threading.Event(), []

    def gated():
        served = models()
        original = served.detector.encode

        def encode(images, boxes=None):  # a model pass that takes as long as the test wants
            passes.append(len(images))
            entered.set()
            gate.wait(60)
            return original(images, boxes)

        served.detector.encode = encode
        return served

    app = create_app(gated, ServeSettings(max_batch=1, batch_wait_ms=0, max_queue=2, timeout=1.5))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        answers = {}

        def ask(name):
            with httpx.Client(base_url=url, timeout=60) as own:
                answers[name] = post_image(own, chelsea_path, classes="cat")

        first = threading.Thread(target=ask, args=("running",))
        first.start()
        assert entered.wait(30)  # the worker is busy with the first request
        waiting = [threading.Thread(target=ask, args=(n,)) for n in ("queued1", "queued2")]
        for t in waiting:
            t.start()
        deadline = time.monotonic() + 30
        while app.state.service.batcher.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = expect(post_image(c, chelsea_path, classes="cat"), 503, "queue_full")
        assert int(r.headers["retry-after"]) >= 1
        for t in [first, *waiting]:
            t.join(60)
        for name in ("running", "queued1", "queued2"):
            expect(answers[name], 504, "timeout")
        gate.set()
        assert alive(c, chelsea_path)
        assert passes == [1, 1]  # the timed-out queued requests were skipped, never computed
        text = c.get("/metrics").text
        assert 'route="/v1/detect",status="503"' in text and 'route="/v1/detect",status="504"' in text


def test_readyz_is_503_until_the_model_is_loaded(models, chelsea_path):
    release = threading.Event()

    def slow_load():
        release.wait(60)
        return models()

    app = create_app(slow_load, ServeSettings())
    with serve_in_thread(app, wait_ready=False) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/healthz").status_code == 200
        expect(c.get("/readyz"), 503, "not_ready")
        expect(post_image(c, chelsea_path, classes="cat"), 503, "not_ready")
        release.set()
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/readyz").json() == {"status": "ready"}
        assert alive(c, chelsea_path)


def test_classify_without_a_classifier_is_501(tiny_owlv2, chelsea_path):
    app = create_app(lambda: ServedModels(Detector.from_pretrained(tiny_owlv2)), ServeSettings())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        expect(post_image(c, chelsea_path, route="/v1/classify", classes="cat"), 501, "classify_unavailable")
        model = json.loads(c.get("/v1/model").text)
        assert model["classify_model"] is None
        assert model["limits"]["max_batch"] == 1  # the default on a CPU: batching there only adds waiting


def test_default_batch_depends_on_the_device():
    import torch

    assert ServeSettings().batch_for(torch.device("cpu")) == 1
    assert ServeSettings().batch_for(torch.device("cuda", 0)) == 8
    assert ServeSettings(max_batch=4).batch_for(torch.device("cpu")) == 4
    with pytest.raises(ValueError):
        ServeSettings(max_batch=0)
