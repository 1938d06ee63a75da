"""`ovdet index` / `ovdet search`: a stored region scores what `ovdet detect` gives it (tiny
OWLv2 and OWL-ViT), re-indexing encodes only new or changed images, user errors are one line,
and `ovdet serve --db` answers /v1/search with the library's hits."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

import ovdet
from ovdet import Detector
from ovdet.cli.app import main
from ovdet.index.store import Store

EXACT = dict(threshold=0.0, nms_iou=1.0, max_detections=100_000, precision="fp32")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, chelsea_path, astronaut_path) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    return [str(shutil.copy(p, folder / p.name)) for p in (chelsea_path, astronaut_path)]


@pytest.fixture(scope="module")
def owlv2_db(tmp_path_factory, tiny_owlv2, photos) -> str:
    """An fp16 index of the two photos built with the tiny OWLv2 (default settings)."""
    db = str(tmp_path_factory.mktemp("db") / "photos.lance")
    ovdet.Index(db, model=str(tiny_owlv2), precision="fp32").add(photos, regions=30)
    return db


def matched(hits, detections_by_path):
    """(hit score, detect's score for the same image, class and box) for every hit."""
    pairs = []
    for h in hits:
        dets = detections_by_path[h.path]
        same = (np.abs(dets.xyxy - np.asarray(h.box)).max(axis=1) < 1e-3) & \
               (np.asarray([dets.class_names[c] for c in dets.class_ids]) == h.class_name)
        assert same.sum() == 1, f"no detection of {h.class_name} at {h.box} in {h.path}"
        pairs.append((h.score, float(dets.scores[same][0])))
    return np.asarray(pairs)


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_search_scores_equal_detect_scores(kind, tiny_models, photos, tmp_path):
    model = str(tiny_models[kind])
    index = ovdet.Index(tmp_path / "db", model=model, **EXACT)
    report = index.add(photos, regions=25, dtype="fp32")
    assert report.encoded == 2 and report.regions <= 50
    hits = index.search("cat,dog", top=10_000)
    assert len(hits) == report.regions  # every stored region is a hit of its best class (no NMS)
    detector = Detector.from_pretrained(model, **EXACT)
    dets = {p: detector.detect(p, ["cat", "dog"]) for p in photos}
    pairs = matched(hits, dets)
    assert np.abs(pairs[:, 0] - pairs[:, 1]).max() < 1e-5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # fp16 vectors (the default): the same regions, scores within fp16 rounding
    index16 = ovdet.Index(tmp_path / "db16", model=model, **EXACT)
    index16.add(photos, regions=25)
    pairs16 = matched(index16.search("cat,dog", top=10_000), dets)
    assert np.abs(pairs16[:, 0] - pairs16[:, 1]).max() < 2e-3


def test_reindex_encodes_only_new_or_changed_images(tiny_owlv2, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos:
        shutil.copy(p, folder)
    index = ovdet.Index(tmp_path / "db", model=str(tiny_owlv2), precision="fp32")
    detector = index.get_detector()
    seen = []
    encode = detector.encode
    detector.encode = lambda images, *a, **k: (seen.extend(images), encode(images, *a, **k))[1]
    first = index.add(folder)
    assert (first.encoded, len(seen)) == (2, 2)
    regions = first.regions
    seen.clear()
    shutil.copy(photos[0], folder / "third.jpg")
    second = index.add(folder)
    assert (second.encoded, second.unchanged, len(seen)) == (1, 2, 1)
    assert len(index) == 3 and second.regions > regions
    seen.clear()
    again = folder / "third.jpg"
    os.utime(again, ns=(again.stat().st_atime_ns, again.stat().st_mtime_ns + 10**9))  # touched: changed
    third = index.add(folder)
    assert (third.encoded, third.changed, len(seen)) == (1, 1, 1)
    assert (third.images, third.regions) == (3, second.regions)  # its old rows replaced, not doubled
    seen.clear()
    assert index.add(folder).encoded == 0 and seen == []


def one_line_exit_2(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_user_errors_are_one_line(owlv2_db, tiny_owlvit, photos, tmp_path, capsys):
    assert "empty" in one_line_exit_2(capsys, ["search", " , ", "--db", owlv2_db])
    assert "QUERY" in one_line_exit_2(capsys, ["search", "--db", owlv2_db])
    assert "--top" in one_line_exit_2(capsys, ["search", "cat", "--db", owlv2_db, "--top", "0"])
    missing = str(tmp_path / "nope.lance")
    assert "no ovdet index at" in one_line_exit_2(capsys, ["search", "cat", "--db", missing])
    assert not Path(missing).exists()
    foreign = one_line_exit_2(capsys, ["search", "cat", "--db", owlv2_db, "--model", str(tiny_owlvit)])
    assert "was built with" in foreign
    assert "was built with" in one_line_exit_2(capsys, ["index", photos[0], "--db", owlv2_db, "--model", str(tiny_owlvit)])
    assert "fixed when an index is created" in one_line_exit_2(capsys, ["index", photos[0], "--db", owlv2_db,
                                                                          "--vectors", "fp32"])
    assert "no ovdet index" in one_line_exit_2(capsys, ["serve", "--db", missing, "--model", str(tiny_owlvit),
                                                        "--port", "0"])


def test_search_cli_json_and_contact_sheet(owlv2_db, photos, tmp_path, capsys):
    sheet = tmp_path / "hits.png"
    assert main(["search", "cat", "--db", owlv2_db, "--threshold", "0", "--top", "7", "--json",
                 "--sheet", str(sheet)]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 7 and {h["image"] for h in hits} <= set(photos)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    library = ovdet.Index(owlv2_db, threshold=0.0).search("cat", top=7)
    assert [h["score"] for h in hits] == [round(h.score, 5) for h in library]
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.size == (5 * 256, 2 * 256)
    # whole images by their stored image vector: cosines, best first, each image once
    assert main(["search", "cat", "--db", owlv2_db, "--images", "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert sorted(h["image"] for h in ranked) == sorted(photos)
    assert ranked[0]["similarity"] >= ranked[1]["similarity"] and all(-1 <= h["similarity"] <= 1 for h in ranked)


def test_serve_search(owlv2_db, tiny_owlv2):
    from ovdet.serve.app import ServedModels, create_app
    from ovdet.serve.background import serve_in_thread

    app = create_app(lambda: ServedModels(Detector.from_pretrained(tiny_owlv2, precision="fp32")), db=owlv2_db)
    expected = ovdet.Index(owlv2_db, precision="fp32").search("cat", top=5, threshold=0.0)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/v1/model").json()["search"] is True
        answer = c.post("/v1/search", json={"query": "cat", "top": 5, "threshold": 0.0})
        assert answer.status_code == 200
        hits = answer.json()["hits"]
        assert [(h["image"], h["score"]) for h in hits] == [(h.path, round(h.score, 5)) for h in expected]
        thumb = c.get("/v1/search/thumb", params={"image_id": hits[0]["image_id"], "box": ",".join(map(str, hits[0]["box"])),
                                                  "label": "cat 0.5"})
        assert thumb.status_code == 200 and thumb.content[:4] == b"\x89PNG"
        assert c.get("/v1/search/thumb", params={"image_id": "1", "box": "0,0,1,1"}).json()["error"] == "not_found"
        bad = c.post("/v1/search", json={"query": ",", "top": 5})
        assert bad.status_code == 400 and bad.json()["error"] == "bad_query"
        assert "search-query" in c.get("/").text
    assert Store.open(owlv2_db).count()[0] == 2


def test_clip_region_preset_scores_equal_detect_scores(tiny_clip, tiny_owlv2, photos, tmp_path):
    """A CLIP-region preset stores the proposer's boxes and their pooled CLIP embeddings."""
    config = tmp_path / "clip.yaml"
    config.write_text(f"backend: clip\nweights: {tiny_clip}\nproposer: owlv2\nproposer_weights: {tiny_owlv2}\n"
                      "proposals: 20\nregion_mode: pooled\ndense_size: 224\nscoring: softmax\ntemplates: photo\n"
                      "threshold: 0.0\nnms_iou: 1.0\nmax_detections: 1000\nprecision: fp32\n")
    index = ovdet.Index(tmp_path / "db", model=str(config))
    report = index.add(photos, dtype="fp32")
    assert (report.encoded, report.regions) == (2, 40)
    hits = index.search("cat,dog", top=1000)
    detector = index.get_detector()
    pairs = matched(hits, {p: detector.detect(p, ["cat", "dog"]) for p in photos})
    assert len(pairs) == 40 and np.abs(pairs[:, 0] - pairs[:, 1]).max() < 1e-5
