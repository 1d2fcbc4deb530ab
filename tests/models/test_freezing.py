import keras
import pytest

from transferkit.config import BackboneConfig, FreezeConfig
from transferkit.errors import FreezePlanError
from transferkit.models.backbones import load_backbone
from transferkit.models.freezing import apply_freeze_plan
from transferkit.testing import TINY_EFFICIENTNET


@pytest.fixture
def backbone():
    return load_backbone(BackboneConfig(**TINY_EFFICIENTNET))


def _trainable_layers(backbone):
    return {layer.name for layer in backbone.weighted_layers() if layer.trainable_weights}


def test_blocks_are_ordered_input_to_output(backbone):
    assert [b.name for b in backbone.blocks()] == ["stem", "block1", "block2", "block3", "top"]


def test_whole_backbone_frozen(backbone):
    summary = apply_freeze_plan(backbone, FreezeConfig(backbone=True))
    assert summary.trainable_params == 0
    assert summary.frozen_params == backbone.model.count_params()
    assert backbone.model.trainable_weights == []


def test_top_blocks_unfreezes_only_those_and_keeps_batchnorm_frozen(backbone):
    apply_freeze_plan(backbone, FreezeConfig(top_blocks=2))
    trainable = _trainable_layers(backbone)
    assert trainable == {"block3a_expand_conv", "block3a_dwconv", "block3a_project", "top_conv"}
    for layer in backbone.model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name


def test_train_batchnorm_opt_in(backbone):
    apply_freeze_plan(backbone, FreezeConfig(top_blocks=1, train_batchnorm=True))
    assert _trainable_layers(backbone) == {"top_conv", "top_bn"}


def test_frozen_batchnorm_runs_in_inference_mode(backbone):
    import numpy as np

    apply_freeze_plan(backbone, FreezeConfig(top_blocks=1))
    bn = backbone.model.get_layer("top_bn")
    before = np.asarray(bn.moving_mean).copy()
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    backbone.model(backbone.normalization(x), training=True)
    np.testing.assert_array_equal(before, np.asarray(bn.moving_mean))


def test_fraction_pattern_all_and_top_layers(backbone):
    apply_freeze_plan(backbone, FreezeConfig(fraction=0.4))  # 2 of 5 blocks
    assert _trainable_layers(backbone) == {"block3a_expand_conv", "block3a_dwconv", "block3a_project", "top_conv"}
    apply_freeze_plan(backbone, FreezeConfig(pattern=r"dwconv$"))
    assert _trainable_layers(backbone) == {"block1a_dwconv", "block2a_dwconv", "block3a_dwconv"}
    apply_freeze_plan(backbone, FreezeConfig(top_layers=1))
    assert _trainable_layers(backbone) == set()  # the last weighted layer is top_bn, kept frozen
    summary = apply_freeze_plan(backbone, FreezeConfig(all=True))
    assert summary.frozen_params == sum(
        int(np.prod(w.shape)) for layer in backbone.model.layers
        if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights)


def test_bad_plans_are_clear_errors(backbone):
    with pytest.raises(FreezePlanError, match=r"has 5 blocks \(stem, block1, block2, block3, top\), "
                                              r"received top_blocks=9"):
        apply_freeze_plan(backbone, FreezeConfig(top_blocks=9))
    with pytest.raises(FreezePlanError, match=r"freeze.pattern: 'nothing_here' matches no layer"):
        apply_freeze_plan(backbone, FreezeConfig(pattern="nothing_here"))


def test_summary_table_lists_blocks(backbone):
    table = apply_freeze_plan(backbone, FreezeConfig(top_blocks=1)).as_table()
    assert table.splitlines()[0].split() == ["block", "trainable", "frozen"]
    assert table.splitlines()[-1].startswith("total")


import numpy as np  # noqa: E402


def test_tiny_backbones_have_named_blocks_and_a_pyramid():
    from transferkit.config import BackboneConfig
    from transferkit.models.backbones import load_backbone
    from transferkit.testing import TINY_BERT, TINY_PYRAMID_EFFICIENTNET

    bert = load_backbone(BackboneConfig(**TINY_BERT))
    assert [b.name for b in bert.blocks(strict=True)] == [
        "embedding", "transformer_layer_0", "transformer_layer_1", "pooled_dense"]
    pyramid = load_backbone(BackboneConfig(**TINY_PYRAMID_EFFICIENTNET))
    assert {"P3", "P4", "P5"} <= set(pyramid.pyramid_outputs)
    assert pyramid.pyramid_model(["P3", "P4", "P5"]) is pyramid.pyramid_model(["P3", "P4", "P5"])


def test_an_architecture_without_block_structure_refuses_top_blocks():
    import keras

    from transferkit.config import FreezeConfig
    from transferkit.errors import ConfigError
    from transferkit.models.backbones import FeatureBackbone, Normalization
    from transferkit.models.freezing import apply_freeze_plan

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="only_conv")(inputs), name="custom")
    backbone = FeatureBackbone(model, Normalization(), source="test")
    with pytest.raises(ConfigError, match="no known block structure"):
        apply_freeze_plan(backbone, FreezeConfig(top_blocks=1))
    apply_freeze_plan(backbone, FreezeConfig(top_layers=1))  # layers are always defined
    assert model.get_layer("only_conv").trainable


def test_a_backbone_class_names_its_own_blocks():
    """A backbone class of one's own groups its layers with `block_pattern`: no table to edit."""
    from transferkit.errors import ConfigError
    from transferkit.models.backbones import FeatureBackbone, Normalization

    class TwoStageNet(keras.Model):
        block_pattern = r"^(stage\d)_"

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="stage1_conv")(inputs)
    x = keras.layers.Conv2D(4, 3, name="stage1_proj")(x)
    x = keras.layers.Conv2D(8, 3, name="stage2_conv")(x)
    model = TwoStageNet(inputs, x)
    backbone = FeatureBackbone(model, Normalization(scale=1 / 255.0, offset=0.0), source="test")
    assert [(b.name, len(b.layers)) for b in backbone.blocks(strict=True)] == [("stage1", 2), ("stage2", 1)]
    apply_freeze_plan(backbone, FreezeConfig(top_blocks=1))
    assert _trainable_layers(backbone) == {"stage2_conv"}

    plain = FeatureBackbone(keras.Model(inputs, x), None, source="test")
    assert plain.block_pattern is None and len(plain.blocks()) == 3  # one block per layer
    with pytest.raises(ConfigError, match="no known block structure"):
        plain.blocks(strict=True)
