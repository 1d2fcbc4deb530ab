"""One interface over every pretrained backbone.

`load_backbone(config)` returns a `FeatureBackbone`: the Keras
backbone model, the normalisation its weights expect, and its layers grouped
into blocks from input to output. Freezing, learning-rate groups and feature
caching all work on that interface, whatever the architecture.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import keras
import numpy as np

from transferkit.config_sections import BackboneConfig
from transferkit.errors import ConfigError, PresetError
from transferkit.models import presets

# How KerasHub's backbone classes, which cannot carry an attribute of ours, group their layers into
# blocks: a layer-name pattern whose first matching capture group names the block, in layer order.
# A backbone class of its own names its groups with a `block_pattern` attribute instead (see
# `FeatureBackbone.block_pattern`), with no edit here.
KERAS_HUB_BLOCK_PATTERNS: dict[str, str] = {
    "EfficientNetBackbone": r"^(stem|block\d+|top)",
    "ResNetBackbone": r"^(conv1|stack\d+|post)",
    "MobileNetBackbone": r"^(input_conv|.*?block_?\d+|output_conv|conv_\d+)",
    "CSPNetBackbone": r"^(stem|stages?_?\d+)",
    "DenseNetBackbone": r"^(conv1|stack\d+|transition\d+|bn)",
    "VGGBackbone": r"^(block\d+)",
    # Transformers: the embeddings (token, position, segment and their norm) are one block.
    "BertBackbone": r"^(?:\w+_)?(embedding)s?(?:_layer_norm)?$|^(transformer_layer_\d+)|^(pooled_dense)",
}


@keras.saving.register_keras_serializable(package="transferkit")
class Normalization(keras.layers.Layer):
    """`x * scale + offset`, per channel or global: the backbone's input scaling.

    Kept as its own layer so the exported model takes 0..255 pixels.
    """

    def __init__(self, scale=1.0, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = _as_list(scale)
        self.offset = _as_list(offset)

    def call(self, inputs):
        scale = keras.ops.convert_to_tensor(self.scale, dtype=inputs.dtype)
        offset = keras.ops.convert_to_tensor(self.offset, dtype=inputs.dtype)
        return inputs * scale + offset

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package="transferkit")
class InferenceMode(keras.layers.Layer):
    """Calls a wrapped layer or model in inference mode (no dropout, no stochastic depth), always.

    A functional model passes its own `training` flag to every layer it
    calls, overriding a `training=False` given when it was built; inside a
    layer's `call` the explicit flag holds. A frozen backbone part wrapped in
    this layer computes what the feature cache computes, while training too.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, *args, **kwargs):
        kwargs.pop("training", None)
        return self.layer(*args, training=False, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(*args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


def _as_list(value) -> float | list[float]:
    if value is None:
        return 1.0
    array = np.asarray(value, dtype="float64").reshape(-1)
    return float(array[0]) if array.size == 1 else [float(v) for v in array]


@dataclasses.dataclass
class Block:
    """A named, ordered group of backbone layers."""

    name: str
    layers: list[keras.layers.Layer]


class FeatureBackbone:
    """A pretrained backbone behind one uniform interface.

    Attributes:
        model: the Keras backbone, image -> feature map (or pooled features).
        normalization: the `Normalization` layer its weights expect on 0..255 pixels.
        source: where it came from (preset name or folder, or "config").

    Example:

    ```python
    backbone = load_backbone(BackboneConfig(preset="efficientnet-lite0"))
    [b.name for b in backbone.blocks()]  # ['stem', 'block1', ..., 'top']
    ```
    """

    def __init__(self, model: keras.Model, normalization: Normalization | None, source: str,
                 unused_layers: Sequence[str] = ()):
        self.model = model
        self._normalization = normalization
        self.source = source
        self._pyramid_models: dict[tuple[str, ...], keras.Model] = {}
        # Layers the task's model does not use (BERT's pooler under a pooling head): not blocks,
        # never unfrozen, not counted. Fixed when the backbone is loaded (`Task.load_backbone`).
        self.unused_layers: frozenset[str] = frozenset(unused_layers)

    def without_layers(self, names: Sequence[str]) -> "FeatureBackbone":
        """The same backbone (same model and weights) with `names` also left out of its blocks."""
        twin = FeatureBackbone(self.model, self._normalization, self.source, self.unused_layers | set(names))
        twin._pyramid_models = self._pyramid_models
        return twin

    @property
    def normalization(self) -> Normalization:
        if self._normalization is None:
            raise PresetError(
                f"backbone {self.source}: the preset does not say how its weights expect pixels to be scaled "
                f"(no KerasHub image converter, no timm pretrained_cfg mean/std, no preprocessor_config.json); "
                f"add a transferkit.json with {{\"normalization\": {{\"scale\": S, \"offset\": O}}}} to the folder")
        return self._normalization

    @property
    def architecture(self) -> str:
        return type(self.model).__name__

    def feature_dim_of(self, output_name: str) -> int:
        """Channels of one named output of a backbone with a dict of outputs."""
        output = self.model.output
        if not isinstance(output, dict) or output_name not in output:
            names = sorted(output) if isinstance(output, dict) else "a single output"
            raise ConfigError(f"backbone: {self.architecture} has no output {output_name!r} (it has {names})")
        return int(output[output_name].shape[-1])

    @property
    def feature_dim(self) -> int:
        """Channels of the backbone's final feature map (the last one, for a dict of outputs)."""
        output = self.model.output
        if isinstance(output, dict):
            output = list(output.values())[-1]
        elif isinstance(output, (list, tuple)):
            output = output[-1]
        return int(output.shape[-1])

    @property
    def pyramid_outputs(self) -> dict[str, Any]:
        """Multi-scale feature maps (for detection heads), where the backbone has them."""
        return dict(getattr(self.model, "pyramid_outputs", {}) or {})

    @property
    def block_pattern(self) -> str | None:
        """The layer-name pattern that groups this backbone's layers into blocks (timm's `group_matcher`).

        A backbone class names its own groups with a `block_pattern` attribute; KerasHub's classes
        (and their subclasses) use `KERAS_HUB_BLOCK_PATTERNS`. None: one block per layer.
        """
        own = getattr(self.model, "block_pattern", None)
        if isinstance(own, str):
            return own
        for cls in type(self.model).__mro__:
            if cls.__name__ in KERAS_HUB_BLOCK_PATTERNS:
                return KERAS_HUB_BLOCK_PATTERNS[cls.__name__]
        return None

    def weighted_layers(self) -> list[keras.layers.Layer]:
        """Layers that own weights, in input-to-output order."""
        return [layer for layer in self.model.layers if layer.weights and layer.name not in self.unused_layers]

    def frozen_prefix(self) -> int:
        """How many blocks, from the input on, have no trainable weights (after a freeze plan)."""
        count = 0
        for block in self.blocks():
            if any(layer.trainable_weights for layer in block.layers):
                break
            count += 1
        return count

    def is_frozen(self) -> bool:
        """Whether no block has trainable weights (the whole backbone frozen by the stage's plan)."""
        return self.frozen_prefix() == len(self.blocks())

    def blocks(self, strict: bool = False) -> list[Block]:
        """The backbone's layers with weights grouped into blocks, input first.

        An architecture with no block pattern has one block per layer; with
        `strict` that is an error instead, because "the top 2 blocks" would
        then silently mean "the top 2 layers".
        """
        pattern = self.block_pattern
        if pattern is None and strict:
            raise ConfigError(
                f"freeze: the backbone {self.architecture} has no known block structure, so top_blocks and "
                f"fraction are undefined; use top_layers: N or pattern: REGEX (known: "
                f"{', '.join(sorted(KERAS_HUB_BLOCK_PATTERNS))}, or a backbone class with a `block_pattern`)"
            )
        blocks: list[Block] = []
        for layer in self.weighted_layers():
            match = re.match(pattern, layer.name) if pattern else None
            # The first group that matched names the block (a pattern may have alternatives).
            name = next((g for g in match.groups() if g), layer.name) if match else layer.name
            if blocks and blocks[-1].name == name:
                blocks[-1].layers.append(layer)
            else:
                blocks.append(Block(name=name, layers=[layer]))
        return blocks

    def feature_extractor(self, input_shape: Sequence[int | None] = (None, None)) -> keras.Model:
        """A model from the task's input (0..255 pixels; `(height, width)` means 3 channels) to pooled
        features, in inference mode."""
        shape = (*input_shape, 3) if len(input_shape) == 2 else tuple(input_shape)
        inputs = keras.Input(shape=shape, name="pixels")
        x = self.normalization(inputs)
        x = self.model(x, training=False)
        if len(x.shape) == 4:
            x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, x, name="feature_extractor")

    def pyramid_model(self, levels: Sequence[str]) -> keras.Model:
        """A model from the backbone's (normalised) input to the named pyramid levels, as a dict.

        Built once per set of levels, so every model composed from it shares
        the backbone's layers and weights.
        """
        available = self.pyramid_outputs
        missing = [level for level in levels if level not in available]
        if missing:
            raise ConfigError(
                f"backbone: {self.architecture} has pyramid levels {sorted(available) or 'none'}; "
                f"received levels {list(levels)}"
            )
        key = tuple(levels)
        if key not in self._pyramid_models:
            self._pyramid_models[key] = keras.Model(self.model.inputs, {level: available[level] for level in levels},
                                                    name="pyramid")
        return self._pyramid_models[key]


def _keras_hub_backbone_class(architecture: str) -> type:
    import keras_hub

    wanted = architecture.replace("_", "").replace("-", "").lower()
    for name in dir(keras_hub.models):
        if not name.endswith("Backbone"):
            continue
        if name.lower() in (wanted, wanted + "backbone"):
            return getattr(keras_hub.models, name)
    choices = sorted(n[: -len("Backbone")].lower() for n in dir(keras_hub.models)
                     if n.endswith("Backbone") and n != "Backbone")
    raise ConfigError(
        f"backbone.architecture: unknown KerasHub architecture {architecture!r}; "
        f"expected one of {', '.join(choices)}"
    )


def load_backbone(config: BackboneConfig, unused_layers: Sequence[str] = ()) -> FeatureBackbone:
    """Builds the backbone a config names (see BackboneConfig); `unused_layers` stay out of its blocks."""
    backbone = _load(config)
    return backbone.without_layers(unused_layers) if unused_layers else backbone


def _load(config: BackboneConfig) -> FeatureBackbone:
    if config.config is not None:
        cls = _keras_hub_backbone_class(config.architecture)
        kwargs = dict(config.config)
        try:
            model = cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"backbone.config: {cls.__name__} rejected the config: {error}") from None
        # Randomly initialised backbones take inputs scaled to [0, 1].
        return FeatureBackbone(model, Normalization(scale=1 / 255.0, offset=0.0, name="normalization"),
                               source="config")
    return load_backbone_preset(config.preset, load_weights=config.load_weights)


def load_backbone_preset(spec: str, load_weights: bool = True) -> FeatureBackbone:
    """Loads a preset's backbone (see transferkit.models.presets) with its input normalisation."""
    loaded = presets.load_preset_model(spec, load_weights=load_weights)
    normalization = (None if loaded.normalization is None else
                     Normalization(scale=loaded.normalization[0], offset=loaded.normalization[1], name="normalization"))
    return FeatureBackbone(loaded.model, normalization, source=loaded.source)
