"""Learning rates and optimizers for fine-tuning stages.

`build_optimizer(stage, steps_per_epoch, variables)` returns a Keras optimizer
with the stage's schedule (linear warmup, then constant or cosine decay) and,
when the stage sets `lr_multipliers`, per-variable learning-rate multipliers
(discriminative learning rates: lower rates for earlier blocks). Gradual
unfreezing is expressed as a list of stages, each unfreezing one more block.
"""

from __future__ import annotations

import math
import re

import keras

from transferkit.config_sections import FreezeConfig, StageConfig


@keras.saving.register_keras_serializable(package="transferkit")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then constant or cosine decay to `floor`."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, decay: str = "constant",
                 floor: float = 0.0):
        if total_steps < 1:
            raise ValueError(f"WarmupSchedule: total_steps must be >= 1. Received: total_steps={total_steps}")
        if decay not in ("constant", "cosine"):
            raise ValueError(f"WarmupSchedule: decay must be 'constant' or 'cosine'. Received: decay={decay!r}")
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(warmup_steps, total_steps))
        self.decay = decay
        self.floor = float(floor)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        peak = keras.ops.convert_to_tensor(self.peak, "float32")
        warm = float(max(self.warmup_steps, 1))
        warmup_lr = peak * keras.ops.minimum(1.0, (step + 1.0) / warm)
        if self.decay == "constant":
            after = peak
        else:
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            after = self.floor + (peak - self.floor) * 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        if self.warmup_steps == 0:
            return after
        return keras.ops.where(step < self.warmup_steps, warmup_lr, after)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "decay": self.decay, "floor": self.floor}


_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


class _MultiplierMixin:
    """Scales the learning rate of each variable by a fixed multiplier.

    Scaling the learning rate (not the gradient) is what adaptive optimizers
    such as Adam need: they are invariant to gradient scale.
    """

    def set_multipliers(self, multipliers: dict[str, float]):
        """Multipliers keyed by variable path; unlisted variables use 1.0."""
        self._lr_multipliers = dict(multipliers)

    def build(self, variables):
        super().build(variables)
        by_path = getattr(self, "_lr_multipliers", {})
        # update_step receives backend variables; look them up by index.
        self._index_multipliers = [float(by_path.get(v.path, 1.0)) for v in variables]

    def _apply_weight_decay(self, variables):
        # Decoupled weight decay scales with the learning rate: give each
        # variable its multiplier there too (0 means "leave this one alone").
        base = self.weight_decay
        if base is None or all(m == 1.0 for m in self._index_multipliers):
            return super()._apply_weight_decay(variables)
        groups: dict[float, list] = {}
        for variable in variables:
            groups.setdefault(self._index_multipliers[self._get_variable_index(variable)], []).append(variable)
        try:
            for multiplier, group in groups.items():
                if multiplier:
                    self.weight_decay = base * multiplier
                    super()._apply_weight_decay(group)
        finally:
            self.weight_decay = base

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._index_multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)


_MULTIPLIER_CLASSES: dict[str, type] = {}


def _optimizer_class(name: str, with_multipliers: bool) -> type:
    base = _OPTIMIZERS[name]
    if not with_multipliers:
        return base
    if name not in _MULTIPLIER_CLASSES:
        _MULTIPLIER_CLASSES[name] = type(f"Discriminative{base.__name__}", (_MultiplierMixin, base), {})
    return _MULTIPLIER_CLASSES[name]


def variable_multipliers(patterns: dict[str, float], variables) -> dict[str, float]:
    """Multiplier of each variable path: the first matching pattern wins."""
    compiled = [(re.compile(p), m) for p, m in patterns.items()]
    result = {}
    for variable in variables:
        for regex, multiplier in compiled:
            if regex.search(variable.path):
                result[variable.path] = float(multiplier)
                break
    return result


def build_optimizer(stage: StageConfig, steps_per_epoch: int, variables=(),
                    schedule: keras.optimizers.schedules.LearningRateSchedule | None = None
                    ) -> keras.optimizers.Optimizer:
    """The optimizer of a stage, with its learning-rate schedule (or `schedule`, e.g. lr-find's sweep)."""
    if schedule is None:
        total = max(1, stage.epochs * steps_per_epoch)
        schedule = WarmupSchedule(stage.learning_rate, total, int(round(stage.warmup_epochs * steps_per_epoch)),
                                  stage.decay)
    kwargs = {"learning_rate": schedule}
    if stage.weight_decay is not None:
        kwargs["weight_decay"] = stage.weight_decay
    elif stage.optimizer == "adamw":
        kwargs["weight_decay"] = 0.004  # Keras's AdamW default
    if stage.optimizer == "sgd":
        kwargs["momentum"] = 0.9
    cls = _optimizer_class(stage.optimizer, bool(stage.lr_multipliers))
    optimizer = cls(**kwargs)
    if stage.lr_multipliers:
        optimizer.set_multipliers(variable_multipliers(stage.lr_multipliers, variables))
    return optimizer


def gradual_unfreezing(blocks: int, epochs_per_block: int, learning_rate: float, first_block: int = 1,
                       decay_per_block: float = 1.0) -> list[StageConfig]:
    """Stages that unfreeze one more top block every `epochs_per_block` epochs."""
    if blocks < first_block:
        raise ValueError(f"gradual_unfreezing: blocks must be >= first_block. Received: blocks={blocks}")
    return [
        StageConfig(name=f"unfreeze_{n}", freeze=FreezeConfig(top_blocks=n), epochs=epochs_per_block,
                    learning_rate=learning_rate * decay_per_block ** (n - first_block))
        for n in range(first_block, blocks + 1)
    ]
