"""Counting a model's floating-point operations from its TensorFlow graph.

The model is traced once for a batch of one; TensorFlow's own per-op
statistics (`flops` registered for Conv2D, DepthwiseConv2dNative, MatMul,
element-wise ops, ...) give each op's count, with a multiply-add counted as
two operations. Ops are attributed to backbone blocks by their name scope,
so a freeze plan can be priced: the frozen prefix runs forward only (or
once, when its outputs are cached), layers above it also run backward.

Training cost convention (the usual one): a backward pass costs about twice
the forward pass of a layer that trains (gradients for its inputs and its
weights) and once the forward pass of a frozen layer that gradients flow
through (inputs only); nothing below the lowest trainable layer.

Example:

```python
flops = count_forward_flops(model, backbone)   # per example
flops.total / 1e9                              # GFLOPs of one forward pass
```
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

_SCOPE_SUFFIX = re.compile(r"_\d+$")


@dataclasses.dataclass(frozen=True)
class ForwardFlops:
    """Forward FLOPs of one example: the whole model and each backbone block (input first)."""

    total: int
    by_block: dict[str, int]

    @property
    def backbone(self) -> int:
        return sum(self.by_block.values())

    @property
    def outside_backbone(self) -> int:
        """The head, pooling and anything the backbone's weighted layers do not own."""
        return self.total - self.backbone


@dataclasses.dataclass(frozen=True)
class StageCost:
    """Per-example FLOPs of one stage's freeze plan."""

    forward: int  # one forward pass of the whole model
    frozen_prefix: int  # forward of the frozen blocks below the lowest trainable one
    frozen_above: int  # forward of frozen blocks above the cut (gradients pass through)
    trainable: int  # forward of trainable blocks plus everything outside the backbone

    @property
    def train_step(self) -> int:
        """Forward and backward FLOPs of one training example without a feature cache."""
        return self.forward + self.frozen_above + 2 * self.trainable

    @property
    def cached_train_step(self) -> int:
        """The same on cached outputs of the frozen prefix: the prefix is not run."""
        return self.train_step - self.frozen_prefix


def _input_specs(model) -> list:
    import tensorflow as tf

    specs = []
    for tensor in model.inputs:
        shape = tuple(tensor.shape)
        if any(dim is None for dim in shape[1:]):
            raise ValueError(f"input {tensor.name!r} has an unknown size {shape}; FLOPs need fixed input shapes")
        specs.append(tf.TensorSpec((1, *shape[1:]), tf.as_dtype(tensor.dtype), name=tensor.name))
    return specs


def op_flops(graph) -> list[tuple[str, int]]:
    """(op name, FLOPs) for every op of `graph` that TensorFlow has a FLOP statistic for."""
    from tensorflow.python.framework import ops as tf_ops

    counted = []
    for op in graph.get_operations():
        try:
            stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
        except ValueError:  # no statistic registered for this op type: not arithmetic
            continue
        if stats.value:
            counted.append((op.name, int(stats.value)))
    return counted


def count_forward_flops(model, backbone=None) -> ForwardFlops:
    """Traces `model` for one example and counts its forward FLOPs, by backbone block when `backbone` is given."""
    import logging

    import tensorflow as tf

    specs = _input_specs(model)
    names = [spec.name for spec in specs]

    def forward(*inputs):
        arguments = inputs[0] if len(inputs) == 1 else dict(zip(names, inputs))
        return model(arguments, training=False)

    # TF's shape helper logs a deprecation warning per conv op; silence it for the trace.
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        graph = tf.function(forward).get_concrete_function(*specs).graph
        counted = op_flops(graph)
    finally:
        tf_logger.setLevel(level)
    block_of: dict[str, str] = {}
    order: list[str] = []
    if backbone is not None:
        for block in backbone.blocks():
            order.append(block.name)
            for layer in block.layers:
                block_of[layer.name] = block.name
    by_block = {name: 0 for name in order}
    for name, value in counted:
        block = _block_of_op(name, block_of)
        if block is not None:
            by_block[block] += value
    return ForwardFlops(total=sum(value for _, value in counted), by_block=by_block)


def _block_of_op(op_name: str, block_of: Mapping[str, str]) -> str | None:
    # Keras scopes each layer call by the layer's name, suffixed `_N` when a name repeats in the graph.
    for part in op_name.split("/"):
        if part in block_of:
            return block_of[part]
        stripped = _SCOPE_SUFFIX.sub("", part)
        if stripped in block_of:
            return block_of[stripped]
    return None


def stage_cost(flops: ForwardFlops, backbone) -> StageCost:
    """Prices the freeze plan currently applied to `backbone` (call after `apply_freeze_plan`)."""
    blocks = backbone.blocks()
    prefix_count = backbone.frozen_prefix()
    prefix = sum(flops.by_block.get(b.name, 0) for b in blocks[:prefix_count])
    frozen_above = trainable_blocks = 0
    for block in blocks[prefix_count:]:
        value = flops.by_block.get(block.name, 0)
        if any(layer.trainable_weights for layer in block.layers):
            trainable_blocks += value
        else:
            frozen_above += value
    return StageCost(forward=flops.total, frozen_prefix=prefix, frozen_above=frozen_above,
                     trainable=trainable_blocks + flops.outside_backbone)
