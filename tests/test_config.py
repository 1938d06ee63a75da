import pytest

from ovdet.config import DetectorConfig, load_config, preset_names
from ovdet.detector import resolve_config
from ovdet.errors import ConfigError


def test_presets_named_in_the_issue_exist_and_load():
    expected = {
        "owlv2-b16": "google/owlv2-base-patch16-ensemble",
        "owlv2-l14": "google/owlv2-large-patch14-ensemble",
        "owlvit-b32": "google/owlvit-base-patch32",
        "owlvit-b16": "google/owlvit-base-patch16",
    }
    assert set(expected) <= set(preset_names())
    for name, hub_id in expected.items():
        cfg = load_config(name)
        assert cfg.name == name and cfg.weights == hub_id and cfg.backend == "owl"
        assert 0.0 < cfg.threshold < 0.5 and cfg.description


def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: owlv2-b16\ntreshold: 0.3\n")
    with pytest.raises(ConfigError, match="unknown config key 'treshold'.*did you mean 'threshold'"):
        load_config(path)
    with pytest.raises(ConfigError, match="did you mean 'max_detections'"):
        load_config("owlv2-b16", max_detection=5)


def test_base_preset_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: owlvit-b32\nthreshold: 0.33\n")
    cfg = load_config(path, nms_iou=0.7, max_detections=None)
    assert cfg.weights == "google/owlvit-base-patch32" and cfg.name == "owlvit-b32"
    assert cfg.threshold == 0.33 and cfg.nms_iou == 0.7 and cfg.max_detections == 100


@pytest.mark.parametrize(
    "text, message",
    [
        ("threshold: 2\n", "threshold must be in"),
        ("nms_iou: 0\n", "nms_iou must be in"),
        ("max_detections: 0\n", "max_detections"),
        ("precision: fp8\n", "precision must be one of"),
        ("region_mode: dense\n", "region_mode must be one of"),
        ("threshold: high\n", "must be a float"),
        ("class_agnostic_nms: 1\n", "must be a bool"),
        ("- a\n- b\n", "expected a mapping of keys to values at the top, got list"),
        ("key: [unclosed\n", "cannot read config"),
        ("base: nope\n", "base 'nope' is not a preset"),
    ],
)
def test_bad_config_files_raise_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert "\n" not in str(err.value)


def test_unknown_preset_and_missing_file():
    with pytest.raises(ConfigError, match="unknown preset 'owlv2-b61'.*did you mean owlv2-b16"):
        load_config("owlv2-b61")
    with pytest.raises(ConfigError, match="cannot read config file .*: file not found"):
        load_config("does/not/exist.yaml")


def test_replace_rejects_unknown_keys():
    cfg = DetectorConfig()
    assert cfg.replace(threshold=0.5).threshold == 0.5
    with pytest.raises(ConfigError):
        cfg.replace(thresh=0.5)


def test_resolve_config_for_folders_and_hub_ids(tiny_owlv2, tiny_owlvit, tmp_path, monkeypatch):
    cfg = resolve_config(str(tiny_owlv2), threshold=0.05)
    assert cfg.weights == str(tiny_owlv2) and cfg.name == "" and cfg.threshold == 0.05
    assert cfg.templates == load_config("owlv2-b16").templates  # family defaults come from the preset
    assert resolve_config(str(tiny_owlvit)).threshold == load_config("owlvit-b32").threshold
    hub = resolve_config("google/owlv2-large-patch14-ensemble")
    assert hub.weights == "google/owlv2-large-patch14-ensemble" and hub.backend == "owl"
    with pytest.raises(ConfigError, match="cannot tell which backend"):
        resolve_config("someone/some-model")
    with pytest.raises(ConfigError, match="model not found"):
        resolve_config(str(tmp_path / "no-such-folder"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    with pytest.raises(ConfigError, match="model not found: tiny/owlv2 does not exist"):
        resolve_config("tiny/owlv2")  # a mistyped local folder is never sent to the hub
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="without config.json"):
        resolve_config(str(tmp_path / "empty"))


def test_other_weights_do_not_inherit_the_preset_folder(tmp_path):
    """weights/<name>/ is looked up by preset name: a config that swaps the weights must not
    keep the name, or it would load the preset's checkpoint instead of its own."""
    path = tmp_path / "mine.yaml"
    path.write_text("base: owlv2-b16\nweights: google/owlvit-base-patch32\n")
    assert load_config(path).name == ""
    assert load_config("owlv2-b16", weights="/some/folder").name == ""
    assert load_config("owlv2-b16", threshold=0.3).name == "owlv2-b16"
    (tmp_path / "same.yaml").write_text("base: owlv2-b16\nthreshold: 0.4\n")
    assert load_config(tmp_path / "same.yaml").name == "owlv2-b16"


def test_every_preset_loads_and_backend_specific_keys_are_checked():
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.name == name and cfg.description
    with pytest.raises(ConfigError, match="region_mode has no effect with backend 'owl'"):
        load_config("owlv2-b16", region_mode="pooled")
    with pytest.raises(ConfigError, match="scoring must be 'native'"):
        load_config("owlv2-b16", scoring="softmax")
    with pytest.raises(ConfigError, match="text_weights has no effect"):
        load_config("clip-b32", text_weights="openai/clip-vit-base-patch32")
