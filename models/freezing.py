"""Freeze plans: which backbone layers train in a stage.

`apply_freeze_plan` sets `layer.trainable` on every backbone layer from a
`FreezeConfig`. BatchNormalization layers of frozen parts run in inference
mode (Keras 3 does that for a non-trainable BN layer), and by default BN stays
frozen inside unfrozen blocks too, the rule of the Keras fine-tuning guide:
small fine-tuning batches would otherwise wreck the pretrained statistics.
The caller must recompile the model afterwards; the runner always does.
"""

from __future__ import annotations

import dataclasses
import math
import re

import keras

from transferkit.config_sections import FreezeConfig
from transferkit.errors import FreezePlanError
from transferkit.models.backbones import FeatureBackbone

BATCHNORM_TYPES = (keras.layers.BatchNormalization,)


def _is_batchnorm(layer) -> bool:
    return isinstance(layer, BATCHNORM_TYPES) or "batch_norm" in type(layer).__name__.lower()


def selected_layers(backbone: FeatureBackbone, plan: FreezeConfig) -> set[int]:
    """ids of the backbone layers the plan unfreezes; errors for impossible plans."""
    blocks = backbone.blocks(strict=plan.top_blocks is not None or plan.fraction is not None)
    layers = backbone.weighted_layers()
    if plan.all:
        return {id(layer) for layer in layers}
    if plan.top_blocks is not None:
        if plan.top_blocks > len(blocks):
            raise FreezePlanError(
                f"freeze.top_blocks: the backbone {backbone.architecture} has {len(blocks)} blocks "
                f"({', '.join(b.name for b in blocks)}), received top_blocks={plan.top_blocks}"
            )
        return {id(layer) for block in blocks[-plan.top_blocks:] for layer in block.layers}
    if plan.top_layers is not None:
        if plan.top_layers > len(layers):
            raise FreezePlanError(
                f"freeze.top_layers: the backbone {backbone.architecture} has {len(layers)} layers with "
                f"weights, received top_layers={plan.top_layers}"
            )
        return {id(layer) for layer in layers[-plan.top_layers:]}
    if plan.fraction is not None:
        count = max(1, math.ceil(plan.fraction * len(blocks)))
        return {id(layer) for block in blocks[-count:] for layer in block.layers}
    if plan.pattern is not None:
        regex = re.compile(plan.pattern)
        chosen = {id(layer) for layer in layers if regex.search(layer.name)}
        if not chosen:
            sample = ", ".join(layer.name for layer in layers[:6])
            raise FreezePlanError(
                f"freeze.pattern: {plan.pattern!r} matches no layer of {backbone.architecture} "
                f"(layer names look like: {sample}, ...)"
            )
        return chosen
    return set()  # the whole backbone frozen


def apply_freeze_plan(backbone: FeatureBackbone, plan: FreezeConfig) -> "FreezeSummary":
    """Sets `trainable` on every backbone layer according to `plan`."""
    chosen = selected_layers(backbone, plan)
    backbone.model.trainable = True  # per-layer flags below decide
    for layer in backbone.model.layers:
        trainable = id(layer) in chosen
        if trainable and _is_batchnorm(layer) and not plan.train_batchnorm:
            trainable = False
        layer.trainable = trainable
    if not chosen:
        backbone.model.trainable = False
    return freeze_summary(backbone)


@dataclasses.dataclass
class BlockRow:
    name: str
    trainable_params: int
    frozen_params: int


@dataclasses.dataclass
class FreezeSummary:
    """Trainable and frozen parameter counts per block."""

    rows: list[BlockRow]

    @property
    def trainable_params(self) -> int:
        return sum(r.trainable_params for r in self.rows)

    @property
    def frozen_params(self) -> int:
        return sum(r.frozen_params for r in self.rows)

    def as_table(self) -> str:
        width = max([5] + [len(r.name) for r in self.rows])
        lines = [f"{'block':<{width}}  {'trainable':>10}  {'frozen':>10}"]
        for row in self.rows:
            lines.append(f"{row.name:<{width}}  {row.trainable_params:>10,}  {row.frozen_params:>10,}")
        lines.append(f"{'total':<{width}}  {self.trainable_params:>10,}  {self.frozen_params:>10,}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"blocks": [dataclasses.asdict(r) for r in self.rows],
                "trainable_params": self.trainable_params, "frozen_params": self.frozen_params}


def _count(weights) -> int:
    return sum(int(math.prod(w.shape)) for w in weights)


def freeze_summary(backbone: FeatureBackbone) -> FreezeSummary:
    rows = []
    for block in backbone.blocks():
        trainable = sum(_count(layer.trainable_weights) for layer in block.layers)
        total = sum(_count(layer.weights) for layer in block.layers)
        rows.append(BlockRow(block.name, trainable, total - trainable))
    return FreezeSummary(rows)
