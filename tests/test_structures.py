import numpy as np
import pytest

from ovdet import Detections
from ovdet.adapters import from_supervision, to_coco_results, to_records, to_supervision

NAMES = ("cat", "dog", "bus")


def make(n=3, **kw):
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    fields = dict(
        xyxy=np.hstack([xy, xy + wh]),
        scores=np.linspace(0.9, 0.3, n),
        class_ids=np.arange(n) % 3,
        class_names=NAMES,
        image_size=(100, 120),
    )
    fields.update(kw)
    return Detections(**fields)


def test_fields_are_normalised_to_documented_dtypes():
    d = make(raw_scores=[1.0, 2.0, 3.0])
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape == (3, 4)
    assert d.scores.dtype == np.float32 and d.class_ids.dtype == np.int64
    assert d.raw_scores.dtype == np.float32
    assert d.class_names == NAMES and d.image_size == (100, 120)
    assert len(d) == 3


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(xyxy=np.zeros((3, 5))), r"shape \(N, 4\)"),
        (dict(scores=np.zeros(2)), "scores has 2 entries but xyxy has 3"),
        (dict(class_ids=[0, 1, 3]), r"class_ids must be in \[0, 3\)"),
        (dict(class_ids=[0, -1, 1]), r"class_ids must be in \[0, 3\)"),
        (dict(image_size=(0, 10)), "image_size"),
        (dict(embeddings=np.zeros((2, 8))), r"embeddings must have shape \(3, D\)"),
        (dict(scores=["a", "b", "c"]), "cannot be converted"),
    ],
)
def test_invalid_fields_raise_actionable_messages(kw, message):
    with pytest.raises(ValueError, match=message):
        make(**kw)


def test_boolean_and_index_selection_keep_fields_aligned():
    d = make(5, raw_scores=np.arange(5), embeddings=np.eye(5), tracker_ids=np.arange(10, 15))
    sel = d[d.scores > 0.5]
    assert len(sel) == int((d.scores > 0.5).sum())
    keep = np.flatnonzero(d.scores > 0.5)
    np.testing.assert_array_equal(sel.xyxy, d.xyxy[keep])
    np.testing.assert_array_equal(sel.raw_scores, keep.astype(np.float32))
    np.testing.assert_array_equal(sel.embeddings, np.eye(5)[keep])
    np.testing.assert_array_equal(sel.tracker_ids, keep + 10)
    one = d[2]
    assert len(one) == 1 and one.class_ids[0] == d.class_ids[2]
    assert d[[4, 0]].scores.tolist() == [d.scores[4], d.scores[0]]
    with pytest.raises(IndexError):
        d[np.array([True, False])]


def test_empty_concat_and_sorted():
    e = Detections.empty(NAMES, (100, 120))
    assert len(e) == 0 and e.xyxy.shape == (0, 4)
    a, b = make(2), make(3)
    c = Detections.concat([a, e, b])
    assert len(c) == 5
    np.testing.assert_array_equal(c.xyxy, np.vstack([a.xyxy, b.xyxy]))
    s = c.sorted()
    assert np.all(np.diff(s.scores) <= 0)
    with pytest.raises(ValueError, match="share class_names"):
        Detections.concat([a, make(2, class_names=("x", "y", "z"))])


def test_supervision_round_trip():
    d = make(4, raw_scores=np.arange(4), tracker_ids=np.arange(4))
    sv_dets = to_supervision(d)
    np.testing.assert_array_equal(sv_dets.xyxy, d.xyxy)
    np.testing.assert_array_equal(sv_dets.confidence, d.scores)
    assert list(sv_dets.data["class_name"]) == d.labels
    back = from_supervision(sv_dets, d.class_names, d.image_size)
    for name in ("xyxy", "scores", "class_ids", "raw_scores", "tracker_ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(d, name))


def test_coco_results_map_class_ids_and_use_xywh():
    d = make(2, xyxy=[[10, 20, 30, 60], [0, 0, 5, 5]], class_ids=[1, 0])
    res = to_coco_results(d, image_id=42, category_ids=[17, 18, 3])
    assert res[0] == {"image_id": 42, "category_id": 18, "bbox": [10.0, 20.0, 20.0, 40.0], "score": pytest.approx(d.scores[0], abs=1e-5)}
    assert res[1]["category_id"] == 17 and res[1]["bbox"] == [0.0, 0.0, 5.0, 5.0]


def test_records_schema():
    d = make(2)
    recs = to_records(d)
    assert set(recs[0]) == {"box", "score", "class_id", "class_name"}
    assert to_records(make(2, raw_scores=[0.5, -1.25]))[1]["raw_score"] == -1.25
    assert recs[1]["class_name"] == NAMES[d.class_ids[1]]
    assert "track_id" in to_records(make(2, tracker_ids=[7, 8]))[0]
