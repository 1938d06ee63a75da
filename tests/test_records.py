"""`ovdet.records` both ways and `ovdet.files`' writers and readers: what a command writes reads
back as the same detections, optional fields included."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ovdet import records
from ovdet.errors import OvdetError
from ovdet.instance_masks import Masks
from ovdet.files import DataFileError, JsonlWriter, read_json, read_jsonl, read_records, read_yaml, write_json
from ovdet.structures import Detections

DENSE = np.zeros((2, 40, 60), bool)
DENSE[0, 2:20, 1:30] = True
DENSE[1, 6:39, 5:50] = True
RLE = Masks.from_dense(DENSE[:1]).to_rle()[0]


def sample() -> Detections:
    return Detections(xyxy=[[1.234, 2, 30.5, 20], [5, 6, 50, 39]], scores=[0.912346, 0.5], class_ids=[2, 0],
                      class_names=("cat", "dog", "bus"), image_size=(40, 60), raw_scores=[1.5, -0.25],
                      tracker_ids=[7, -1], extra={"uncalibrated_score": [0.8, 0.4]}, masks=Masks.from_dense(DENSE))


def test_image_record_round_trip_keeps_every_field():
    dets = sample()
    rec = records.image_record("a.jpg", dets)
    rec = json.loads(json.dumps(rec))  # as read back from a file
    assert rec["width"] == 60 and rec["height"] == 40 and rec["image"] == "a.jpg"
    first = rec["detections"][0]
    assert first["box"] == [1.23, 2.0, 30.5, 20.0] and first["score"] == 0.91235 and first["class_name"] == "bus"
    assert first["mask"] == RLE and first["track_id"] == 7 and first["uncalibrated_score"] == 0.8
    back = records.detections_from_image_record(rec, dets.class_names)
    assert back.class_names == dets.class_names and back.image_size == (40, 60)
    np.testing.assert_array_equal(back.class_ids, dets.class_ids)
    np.testing.assert_allclose(back.xyxy, np.round(dets.xyxy, 2))
    np.testing.assert_allclose(back.raw_scores, dets.raw_scores)
    np.testing.assert_array_equal(back.tracker_ids, dets.tracker_ids)
    assert (back.masks.to_dense() == DENSE).all()
    np.testing.assert_allclose(back.extra["uncalibrated_score"], [0.8, 0.4])
    # without a vocabulary, the records' own ids and names make one (unused ids are named)
    inferred = records.detections_from_image_record(rec)
    assert inferred.class_names == ("cat", "class_1", "bus") and inferred.labels == ["bus", "cat"]
    assert records.detections_from_image_record(records.error_record("b.jpg", "unreadable")) is None


def test_frame_and_classification_records_round_trip():
    dets = sample()
    frame = json.loads(json.dumps(records.frame_record(12, 0.499999, dets)))
    assert frame["frame"] == 12 and frame["time"] == 0.5
    back = records.detections_from_frame_record(frame, (40, 60), dets.class_names)
    assert back.labels == dets.labels and back.tracker_ids.tolist() == [7, -1]
    assert (back.masks.to_dense() == DENSE).all()
    probs = {"cat": 0.2, "dog": 0.7, "bus": 0.1}
    rec = records.classification_record("a.jpg", probs, top=2)
    assert [t["class_name"] for t in rec["top"]] == ["dog", "cat"]
    assert records.probabilities_from_record(json.loads(json.dumps(rec))) == probs


@pytest.mark.parametrize("record, message", [
    ({"image": "a.jpg", "width": 6, "detections": []}, "an entry has no 'height' field"),
    ({"image": "a.jpg", "width": 6, "height": 4, "detections": [{"box": [0, 0, 1, 1], "score": 1}]},
     "missing field 'class_id'"),
    ({"image": "a.jpg", "width": 6, "height": 4,
      "detections": [{"box": [0, 0, 1, 1], "score": 1, "class_id": 0, "class_name": "yak"}]},
     "class 'yak' is not in the vocabulary"),
])
def test_malformed_records_are_one_line_errors(record, message):
    with pytest.raises(records.RecordError, match=message) as err:
        records.detections_from_image_record(record, ("cat",) if "yak" in str(record) else None, source="r.json")
    assert "\n" not in str(err.value) and str(err.value).startswith("r.json")


def test_writers_and_readers(tmp_path, capsys):
    dets = sample()
    results = [records.image_record("a.jpg", dets)]
    write_json(tmp_path / "d" / "results.json", results)
    assert read_records(tmp_path / "d" / "results.json") == json.loads(json.dumps(results))
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers
    write_json("-", {"x": 1})
    assert json.loads(capsys.readouterr().out) == {"x": 1}
    with JsonlWriter(tmp_path / "f.jsonl") as out:
        out.write(records.frame_record(0, 0.0, dets))
    with JsonlWriter(tmp_path / "f.jsonl", append=True) as out:
        out.write(records.frame_record(1, 0.1, dets))
    assert [r["frame"] for r in read_records(tmp_path / "f.jsonl")] == [0, 1]
    # a last line cut short by a crash is dropped only when asked
    with open(tmp_path / "f.jsonl", "a") as fh:
        fh.write('{"frame": 2, "ti')
    assert len(read_jsonl(tmp_path / "f.jsonl", partial_tail=True)) == 2
    with pytest.raises(DataFileError, match="line 3 is not valid JSON"):
        read_jsonl(tmp_path / "f.jsonl")


def test_reader_errors_have_one_wording(tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    (tmp_path / "list.yaml").write_text("- a\n")
    cases = [(lambda: read_json(tmp_path / "none.json", "boxes file"),
              "cannot read boxes file .*none.json: file not found"),
             (lambda: read_json(tmp_path / "bad.json"), "cannot read JSON file .*: it is not valid JSON \\(line 1"),
             (lambda: read_yaml(tmp_path / "bad.yaml", "ontology"), "cannot read ontology .*: it is not valid YAML"),
             (lambda: read_yaml(tmp_path / "list.yaml", "config", expect=dict),
              "expected a mapping of keys to values at the top, got list"),
             (lambda: read_json(tmp_path, "manifest"), "it is a folder")]
    for call, message in cases:
        with pytest.raises(DataFileError, match=message) as err:
            call()
        assert "\n" not in str(err.value)

    class Mine(OvdetError):
        pass

    with pytest.raises(Mine, match="cannot read results file"):
        read_json(tmp_path / "none.json", "results file", error=Mine)
