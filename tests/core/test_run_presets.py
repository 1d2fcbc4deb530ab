"""A finished run is a preset: `backbone.preset: RUN` starts another run from its fine-tuned backbone."""

import json

import numpy as np
import pytest

from transferkit.config import build_run_config
from transferkit.errors import ConfigError, PresetError
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.runner import load_run, prepare_run, train


def _backbone_weights(model):
    return model.get_layer("backbone_inference").layer.get_weights()


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_preset")
    config = tiny_config(make_image_folder(root / "images", per_class=6, size=32), stages=[
        {"name": "top", "freeze": {"top_blocks": 2}, "epochs": 1, "learning_rate": 1e-2}])
    return train(build_run_config(config), root / "run")


def test_a_finished_run_saves_its_fine_tuned_backbone_as_a_preset(image_run):
    folder = image_run / "backbone"
    facts = json.loads((folder / "transferkit.json").read_text())
    assert (folder / "config.json").is_file() and facts["from_run"]["task"] == "image_classification"
    assert facts["from_run"]["preprocessor_class"] == "ImagePreprocessor"
    assert "backbone" in json.loads((image_run / ".transferkit-run.json").read_text())["written"]
    # Its one stage trained the top blocks, so the saved backbone is a fine-tuned one and the summary says where.
    from transferkit.summary import run_summary

    assert facts["from_run"]["unchanged_in_stage"] is None
    assert f"preset    {folder}: start another run from it with backbone.preset: {image_run}" in run_summary(image_run)


def test_a_run_whose_best_epoch_froze_the_backbone_says_its_preset_is_the_starting_one(tmp_path):
    from transferkit.summary import run_summary

    config = tiny_config(make_image_folder(tmp_path / "images", per_class=4, size=32), stages=[
        {"name": "probe", "freeze": {"backbone": True}, "epochs": 1, "learning_rate": 1e-2}])
    run = train(build_run_config(config), tmp_path / "run")
    facts = json.loads((run / "backbone" / "transferkit.json").read_text())
    assert facts["from_run"]["unchanged_in_stage"] == "probe"
    assert "the starting weights (best epoch in frozen stage 'probe')" in run_summary(run)


def test_another_task_of_the_same_inputs_starts_from_the_runs_weights(image_run, tmp_path):
    from transferkit.plugins.multilabel_classification.testing import make_multilabel_folder
    from transferkit.plugins.multilabel_classification.testing import tiny_config as multilabel_config

    _, _, trained, _ = load_run(image_run)
    config = multilabel_config(make_multilabel_folder(tmp_path / "data", count=12, size=32),
                               stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 1,
                                        "learning_rate": 1e-2}])
    config["backbone"] = {"preset": str(image_run)}  # replaces the tiny random backbone
    task, _, backbone, model = prepare_run(build_run_config(config))
    start = backbone.model.get_weights()
    assert len(start) == len(_backbone_weights(trained))
    assert all(np.array_equal(a, b) for a, b in zip(start, _backbone_weights(trained)))
    assert backbone.normalization.scale == pytest.approx(trained.get_layer("normalization").scale)
    assert task.name == "multilabel_classification" and model.output_shape == (None, 3)


def test_a_run_of_other_inputs_or_an_unfinished_run_is_refused(image_run, tmp_path):
    from transferkit.plugins.text_classification.testing import make_text_dataset, tiny_text_config

    make_text_dataset(tmp_path / "texts", count=16)
    text = tiny_text_config(tmp_path / "texts")
    text["backbone"] = {"preset": str(image_run)}
    with pytest.raises(ConfigError, match=r"image_classification run whose backbone reads ImagePreprocessor "
                                          r"inputs; task text_classification reads TextPreprocessor"):
        prepare_run(build_run_config(text))
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "config.yaml").write_text((image_run / "config.yaml").read_text())
    from transferkit.models.presets import resolve_preset

    with pytest.raises(PresetError, match="has not finished"):
        resolve_preset(str(unfinished))


def test_audio_runs_must_share_the_spectrogram_settings(tmp_path):
    from transferkit.models import run_presets
    from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor

    folder = tmp_path / "preset"
    folder.mkdir()
    saved = AudioPreprocessor(sample_rate=16000, num_mels=64).get_config()
    (folder / "transferkit.json").write_text(json.dumps({"from_run": {
        "task": "audio_classification", "preprocessor_class": "AudioPreprocessor", "preprocessor": saved}}))
    same_but_longer = AudioPreprocessor(sample_rate=16000, num_mels=64, clip_seconds=2.0, image_size=(64, 128))
    run_presets.check_preprocessor(folder, AudioPreprocessor, lambda: same_but_longer, "audio_classification", "r")
    with pytest.raises(run_presets.RunPresetError, match="num_mels: the run used 64, this config has 40"):
        run_presets.check_preprocessor(folder, AudioPreprocessor, lambda: AudioPreprocessor(num_mels=40),
                                       "audio_classification", "r")


def test_presets_import_copies_a_runs_backbone_under_a_name(image_run, tmp_path):
    from transferkit.cli import main
    from transferkit.models.presets import cached_preset_path, resolve_preset

    assert main(["presets", "import", str(image_run), "--name", "shapes-run"]) == 0
    assert resolve_preset("shapes-run") == str(cached_preset_path("shapes-run"))
    assert (cached_preset_path("shapes-run") / "transferkit.json").is_file()
    assert main(["presets", "import", str(image_run), "--name", "shapes-run"]) != 0  # exists: --force replaces
    assert main(["presets", "import", str(image_run), "--name", "shapes-run", "--force"]) == 0
    mine = tmp_path / "not_a_run"
    mine.mkdir()
    with pytest.raises(PresetError, match="not a transferkit run folder"):
        from transferkit.models.presets import import_preset

        import_preset(str(mine), to="x")


def test_a_text_run_starts_a_text_run_with_its_vocabulary(tmp_path):
    from transferkit.plugins.text_classification.testing import make_text_dataset, tiny_text_config

    make_text_dataset(tmp_path / "texts", count=24)
    first = tiny_text_config(tmp_path / "texts", stages=[
        {"name": "top", "freeze": {"top_layers": 1}, "epochs": 1, "learning_rate": 1e-3}])
    run = train(build_run_config(first), tmp_path / "run")
    _, first_task, trained, first_info = load_run(run)
    again = tiny_text_config(tmp_path / "texts")
    again["backbone"] = {"preset": str(run)}
    again.get("tokenizer", {}).pop("vocabulary", None)
    task, _, backbone, _ = prepare_run(build_run_config(again))
    assert task.preprocessor().vocabulary == first_task.preprocessor(first_info).vocabulary
    # Every value of the new run's backbone is one of the trained run's (its fine-tuned top layer included),
    # but for the layers the text task does not use (BERT's pooler), which its model does not hold.
    trained_values = {(w.shape, float(np.asarray(w, np.float64).sum())) for w in trained.get_weights()}
    used = [v for v in backbone.model.weights if v.path.split("/")[0] not in backbone.unused_layers]
    assert len(used) < len(backbone.model.weights)
    assert all((tuple(v.shape), float(np.asarray(v, np.float64).sum())) in trained_values for v in used)
