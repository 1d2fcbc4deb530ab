"""A timm-format preset folder (config.json + model.safetensors) loads offline.

The folder is written here with random weights in timm's resnet18 layout, so
the test needs no download; it checks KerasHub's timm route through
`load_backbone`, the uniform block interface on a second architecture, and
that the weights and the normalisation come from the folder.
"""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from transferkit.config import BackboneConfig, FreezeConfig
from transferkit.models.backbones import load_backbone
from transferkit.models.freezing import apply_freeze_plan

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _bn(tensors, prefix, channels, rng):
    tensors[f"{prefix}.weight"] = rng.uniform(0.5, 1.5, channels).astype("float32")
    tensors[f"{prefix}.bias"] = rng.normal(0, 0.1, channels).astype("float32")
    tensors[f"{prefix}.running_mean"] = rng.normal(0, 0.1, channels).astype("float32")
    tensors[f"{prefix}.running_var"] = rng.uniform(0.5, 1.5, channels).astype("float32")


def _conv(tensors, name, out_c, in_c, k, rng):
    tensors[name] = rng.normal(0, 0.05, (out_c, in_c, k, k)).astype("float32")


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    tensors = {}
    _conv(tensors, "conv1.weight", 64, 3, 7, rng)
    _bn(tensors, "bn1", 64, rng)
    in_c = 64
    for stage, out_c in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            _conv(tensors, f"{prefix}.conv1.weight", out_c, in_c if block == 0 else out_c, 3, rng)
            _bn(tensors, f"{prefix}.bn1", out_c, rng)
            _conv(tensors, f"{prefix}.conv2.weight", out_c, out_c, 3, rng)
            _bn(tensors, f"{prefix}.bn2", out_c, rng)
            if block == 0 and stage > 1:
                _conv(tensors, f"{prefix}.downsample.0.weight", out_c, in_c, 1, rng)
                _bn(tensors, f"{prefix}.downsample.1", out_c, rng)
        in_c = out_c
    tensors["fc.weight"] = rng.normal(0, 0.01, (1000, 512)).astype("float32")
    tensors["fc.bias"] = np.zeros(1000, "float32")
    folder = tmp_path_factory.mktemp("timm_resnet18")
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "resnet18", "num_classes": 1000, "num_features": 512,
        "pretrained_cfg": {"input_size": [3, 224, 224], "mean": MEAN, "std": STD, "interpolation": "bicubic",
                           "crop_pct": 0.875}}))
    return folder, tensors


def test_timm_folder_loads_with_its_weights_and_normalisation(timm_folder):
    folder, tensors = timm_folder
    backbone = load_backbone(BackboneConfig(preset=str(folder)))
    assert backbone.architecture == "ResNetBackbone"
    assert backbone.feature_dim == 512
    kernel = np.asarray(backbone.model.get_layer("conv1_conv").kernel)
    np.testing.assert_allclose(kernel, np.transpose(tensors["conv1.weight"], (2, 3, 1, 0)))
    np.testing.assert_allclose(backbone.normalization.scale, [1 / 255 / s for s in STD], rtol=1e-6)
    np.testing.assert_allclose(backbone.normalization.offset, [-m / s for m, s in zip(MEAN, STD)], rtol=1e-6)
    names = [b.name for b in backbone.blocks()]
    assert names == ["conv1", "stack0", "stack1", "stack2", "stack3"]
    summary = apply_freeze_plan(backbone, FreezeConfig(top_blocks=1))
    trainable = {r.name: r.trainable_params for r in summary.rows}
    assert trainable["stack3"] > 0 and trainable["stack2"] == 0 and trainable["conv1"] == 0
    features = backbone.feature_extractor((64, 64))(np.zeros((1, 64, 64, 3), "float32"))
    assert features.shape == (1, 512)
